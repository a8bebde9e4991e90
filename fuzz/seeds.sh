#!/usr/bin/env bash
# Rebuild the seed corpora in fuzz/corpus/ (committed; keep them small):
# the engines' sample configs, processes and resources (the integration
# recipes' samples/), the repository's profiles and seccomp profile, and
# real audit logs written by `buildcell step` (unsigned, plain key, sealing
# key; the public keys go to fuzz/keys/, the secret keys are thrown away).
# Run as root (the steps need the root sandbox): fuzz/seeds.sh BUILDCELL [SAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:?usage: fuzz/seeds.sh BUILDCELL [SAMPLES_DIR]}")
samples=${2:-../shared/integration-recipes/samples}
out=fuzz/corpus
rm -rf "$out"
mkdir -p "$out"/{config_json,profile_toml,seccomp_json,exec_process,update_resources,audit_verify}

python3 - "$samples" "$out" <<'PY'
import glob, hashlib, json, os, sys
samples, out = sys.argv[1], sys.argv[2]
def put(target, name, data):
    if isinstance(data, (dict, list)):
        data = json.dumps(data, indent=1)
    if isinstance(data, str):
        data = data.encode()
    path = os.path.join(out, target, name)
    # One copy of each content.
    for other in glob.glob(os.path.join(out, target, "*")):
        if open(other, "rb").read() == data:
            return
    open(path, "wb").write(data)
for f in sorted(glob.glob(os.path.join(samples, "*.json"))):
    base = os.path.basename(f)
    kind = base.split(".")[0]
    data = open(f, "rb").read()
    if base.endswith(".create.config.json"):
        put("config_json", base, data)
        spec = json.loads(data)
        if "process" in spec:
            put("exec_process", kind + ".config.process.json", spec["process"])
        linux = spec.get("linux", {})
        if "resources" in linux:
            put("update_resources", kind + ".config.resources.json", linux["resources"])
        if "seccomp" in linux:
            put("seccomp_json", kind + ".config.seccomp.json", linux["seccomp"])
    elif base.endswith(".exec.process.json"):
        put("exec_process", base, data)
    elif base.endswith(".update.resources.json"):
        put("update_resources", base, data)
PY

cp profiles/*.toml "$out"/profile_toml/
printf 'default_profile = "build"\nselectable_by_annotation = ["build-network", "strict"]\nprofile_dirs = ["/etc/buildcell/profiles"]\n' \
  > "$out"/profile_toml/config.toml
cp seccomp/default.json "$out"/seccomp_json/default.json

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/keys" "$tmp/logs" "$tmp/work"
"$bin" spec --bundle "$tmp/work" >/dev/null
cp "$tmp/work/config.json" "$out"/config_json/buildcell-spec.config.json
"$bin" audit keygen --plain "$tmp/keys/plain" >/dev/null
"$bin" audit keygen --epoch 1h "$tmp/keys/sealed" >/dev/null
cp "$tmp/keys/plain.pub" fuzz/keys/plain.pub
cp "$tmp/keys/sealed.pub" fuzz/keys/sealed.pub
cd "$tmp/work"
"$bin" step --audit-log "$tmp/logs/unsigned.log" -- sh -c 'true; /bin/true; ls >/dev/null'
"$bin" step --audit-log "$tmp/logs/plain.log" --audit-key "$tmp/keys/plain" -- sh -c 'true; ls >/dev/null'
"$bin" step --audit-log "$tmp/logs/sealed.log" --audit-key "$tmp/keys/sealed" -- sh -c 'ls / >/dev/null'
"$bin" step --audit-log "$tmp/logs/failed.log" --audit-key "$tmp/keys/sealed" --env API_TOKEN=hunter22 \
  -- sh -c 'not-a-command; exit 3' 2>/dev/null || true
cd - >/dev/null
cp "$tmp"/logs/*.log "$tmp/logs/index" "$out"/audit_verify/
du -sh "$out"
