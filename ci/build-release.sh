#!/usr/bin/env bash
# Build target/release/buildcell as it ships: static-pie, glibc linked in.
#   ci/build-release.sh [--quiet]
#
# Static linking takes the pages of libc.so.6, ld.so and libgcc_s.so.1
# out of every call (peak RSS about 0.9 MiB lower, start-up about 0.3 ms
# shorter; see bench/NOTES.md) and keeps the binary position-independent
# (ASLR as before). `-C target-feature=+crt-static` goes to the binary's
# crate alone (`cargo rustc`): RUSTFLAGS or a [target] rustflags entry would
# also reach the proc-macro crates, which cannot be linked statically. With
# LTO the whole program is compiled and linked in that last step anyway.
# Plain `cargo build --release` still works and gives the dynamic binary.
#
# The link also packs the relative relocations (-z pack-relative-relocs:
# 11,000 of them in 3 KiB instead of 264 KiB that every start read and
# applied) and lays functions out in the order of ci/symbol-order.txt:
# the code the subcommands run, packed at the front (the kernel maps file
# pages around every fault, so scattered hot code maps most of the file).
# Together about 1 MiB less peak RSS per call (bench/NOTES.md, "Code
# layout"). ci/symbol-order.py regenerates the order; with --check it
# tells from the link map (release/buildcell.map beside the binary) that
# the order still fits. Both need rust-lld, the linker of Rust 1.90 and
# later on x86_64 Linux.
#
# glibc's name service (users of LDAP or sssd, for `step`'s subuid look-up)
# loads its modules from the host's glibc at run time: build on the host
# that runs buildcell, as "Install on a build host" in README.md does.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || export PATH="${HOME:-/root}/.cargo/bin:$PATH"
minor=$(rustc --version | sed -n 's/^rustc 1\.\([0-9]*\)\..*/\1/p')
if [ -z "$minor" ] || [ "$minor" -lt 90 ]; then
    echo "ci/build-release.sh: needs Rust 1.90 or later (rust-lld links the release binary); found: $(rustc --version)" >&2
    exit 1
fi
map="${CARGO_TARGET_DIR:-target}/release/buildcell.map"
mkdir -p "$(dirname "$map")"
exec cargo rustc --release --bin buildcell "$@" -- -C target-feature=+crt-static -C strip=symbols \
    -C link-arg=-Wl,-z,pack-relative-relocs \
    -C link-arg=-Wl,--symbol-ordering-file=ci/symbol-order.txt \
    -C link-arg=-Wl,--no-warn-symbol-ordering \
    -C "link-arg=-Wl,-Map=$map"
