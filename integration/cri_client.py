"""The CRI client shared by integration/deploy-cri.py and cri-userns.py:
their common options and a RuntimeService stub on containerd's socket,
built from the shared recipes' generated stubs (cri-smoke.py's load_stubs)."""
import argparse
import importlib.util
import os


def parser():
    """The options both scripts take (each adds its own)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sock", required=True)
    ap.add_argument("--handler", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--logdir", required=True)
    ap.add_argument("--recipes", required=True, help="the shared recipes' lib directory")
    return ap


def connect(recipes, sock):
    """-> (pb, runtime service stub): the CRI messages and a client of `sock`."""
    spec = importlib.util.spec_from_file_location("cri_smoke", os.path.join(recipes, "cri-smoke.py"))
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    pb, pbg = smoke.load_stubs()
    import grpc
    return pb, pbg.RuntimeServiceStub(grpc.insecure_channel("unix://" + sock))
