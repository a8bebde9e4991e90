#!/usr/bin/python3
"""What a Kubernetes pod with `runtimeClassName: HANDLER` turns into at the
CRI (RunPodSandbox(runtime_handler=HANDLER), then a container), against a
containerd whose handlers come from deploy/containerd/buildcell.toml.

  deploy-cri.py --sock S --handler H --image I --logdir D --recipes LIB
                [--network pod|host] [--exec CMD] run
      a pod and one container; prints `sandbox ID`, the output of
      `sh -c CMD` run in the container (ExecSync, as a probe; lines
      `exec| ...` and `exec rc N`) and `container ID STATE`, then waits for a
      line on stdin and removes the pod (the caller reads the runtime's
      state meanwhile)
  deploy-cri.py ... refused
      the same pod; prints the CRI error (the runtime's one-line refusal)
      and exits 0 when RunPodSandbox failed, 1 when it ran

--network pod (the default): the pod's network is containerd's CNI network
(`hostNetwork: false`: a network namespace made for the sandbox and joined
by path by its containers); --network host: `hostNetwork: true` (the node's).

Uses the stubs of the shared recipes' cri-smoke.py (cri_min.proto).
"""
import os
import sys
import time

import cri_client  # integration/cri_client.py, beside this script


def main():
    ap = cri_client.parser()
    ap.add_argument("--cgroup-parent", default="", help="the pod's cgroup parent (unique to the run)")
    ap.add_argument("--network", choices=["pod", "host"], default="pod",
                    help="pod: the CNI network (hostNetwork: false); host: hostNetwork: true")
    ap.add_argument("--exec", default="", help="run `sh -c EXEC` in the container (ExecSync) and print its output")
    ap.add_argument("--drop-all-caps", action="store_true",
                    help="the container's securityContext drops ALL capabilities")
    ap.add_argument("mode", choices=["run", "refused"])
    a = ap.parse_args()

    pb, rt = cri_client.connect(a.recipes, a.sock)
    import grpc  # for grpc.RpcError below (python3-grpc, as the stubs need)
    T = 60
    sbcfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"deploy-{a.handler}", uid=f"deploy-{os.getpid()}",
                                       namespace="default", attempt=0),
        log_directory=a.logdir,
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=a.cgroup_parent, security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.NODE if a.network == "host" else pb.POD))))
    try:
        sb = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=sbcfg, runtime_handler=a.handler),
                              timeout=T).pod_sandbox_id
    except grpc.RpcError as e:
        print(f"RunPodSandbox(handler={a.handler}) failed: {e.details()}")
        return 0 if a.mode == "refused" else 1
    try:
        if a.mode == "refused":
            print(f"RunPodSandbox(handler={a.handler}) ran: pod sandbox {sb}")
            return 1
        print(f"sandbox {sb}", flush=True)
        linux = None
        if a.drop_all_caps:
            # securityContext.capabilities.drop = ["ALL"]: CRI fields the
            # shared minimal proto leaves out (LinuxContainerSecurityContext
            # 1 = capabilities, Capability 2 = drop_capabilities), given as
            # their wire bytes, which protobuf keeps and sends as they are.
            sc = pb.LinuxContainerSecurityContext()
            sc.MergeFromString(b"\x0a\x05\x12\x03ALL")
            linux = pb.LinuxContainerConfig(security_context=sc)
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="step"), image=pb.ImageSpec(image=a.image),
                                 command=["sleep", "7306"], log_path="step.log", linux=linux)
        c = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=sb, config=cfg, sandbox_config=sbcfg),
                               timeout=T).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=c), timeout=T)
        for _ in range(100):
            st = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=c), timeout=T).status
            if st.state == pb.CONTAINER_RUNNING:
                break
            time.sleep(0.1)
        if a.exec:
            r = rt.ExecSync(pb.ExecSyncRequest(container_id=c, cmd=["sh", "-c", a.exec], timeout=10), timeout=T)
            for line in (r.stdout + r.stderr).decode(errors="replace").splitlines():
                print(f"exec| {line}")
            print(f"exec rc {r.exit_code}", flush=True)
        print(f"container {c} {pb.ContainerState.Name(st.state)}", flush=True)
        sys.stdin.readline()
        rt.StopContainer(pb.StopContainerRequest(container_id=c, timeout=1), timeout=T)
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=c), timeout=T)
    finally:
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sb), timeout=T)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sb), timeout=T)
    return 0


if __name__ == "__main__":
    sys.exit(main())
