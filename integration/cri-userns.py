#!/usr/bin/python3
"""A pod through containerd's CRI plugin and a runtime handler, looked at from
the host: the sandbox's and the container's processes run as an unprivileged
host uid (the first id of the range their added user namespace maps 0 to),
never as host root. Uses the stubs of the shared recipes' cri-smoke.py
(cri_min.proto). Prints PASS/FAIL lines; exits 1 if any check failed.
"""
import os
import sys
import time

import cri_client  # integration/cri_client.py, beside this script

FAILED = 0


def check(name, ok, detail=""):
    global FAILED
    if not ok:
        FAILED += 1
    print(f"{'PASS' if ok else 'FAIL'} {name:<52} {detail}", flush=True)


def find(argv, secs=20):
    """Host pid of the process whose argv is exactly `argv`."""
    want = ("\0".join(argv) + "\0").encode()
    for _ in range(secs * 10):
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if f.read() == want:
                        return int(p)
            except OSError:
                pass
        time.sleep(0.1)
    return None


def host_view(pid):
    """(uids, uid_map start, count, in another user namespace)."""
    with open(f"/proc/{pid}/status") as f:
        uids = next(line.split()[1:] for line in f if line.startswith("Uid:"))
    with open(f"/proc/{pid}/uid_map") as f:
        start, count = f.readline().split()[1:3]
    other = os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
    return [int(u) for u in uids], int(start), int(count), other


def unprivileged(name, argv):
    pid = find(argv)
    if pid is None:
        check(name, False, f"no process {' '.join(argv)!r} on the host")
        return
    uids, start, count, other = host_view(pid)
    ok = other and count == 65536 and start != 0 and uids == [start] * 4
    check(name, ok, f"host pid {pid}: uids {uids}, uid_map 0 {start} {count}")


def main():
    a = cri_client.parser().parse_args()
    pb, rt = cri_client.connect(a.recipes, a.sock)
    T = 60
    ns = pb.NamespaceOption(network=pb.NODE)
    sbcfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="userns", uid=f"userns-{os.getpid()}", namespace="default", attempt=0),
        log_directory=a.logdir,
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns)))
    sb = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=sbcfg, runtime_handler=a.handler), timeout=T).pod_sandbox_id
    try:
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="sleeper"), image=pb.ImageSpec(image=a.image),
                                 command=["sleep", "7305"], log_path="sleeper.log")
        c = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=sb, config=cfg, sandbox_config=sbcfg),
                               timeout=T).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=c), timeout=T)
        unprivileged("userns: CRI pod sandbox runs as an unprivileged host uid", ["sleep", "2147483647"])
        unprivileged("userns: CRI container runs as an unprivileged host uid", ["sleep", "7305"])
        rt.StopContainer(pb.StopContainerRequest(container_id=c, timeout=1), timeout=T)
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=c), timeout=T)
    finally:
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sb), timeout=T)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sb), timeout=T)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
