#!/bin/bash
# The init of a "fresh machine" for tests/appliance/test_fresh_machine.py: a Debian root file system with the
# mounts a booted machine has, in mount and PID namespaces of its own. Started as
#
#   unshare --mount --propagation private --pid --fork --kill-child fresh_machine.sh ROOT ARCHIVES PIP_CACHE [SRC...]
#
# it makes ROOT a mount point, mounts ROOT/proc (this PID namespace's), ROOT/sys, ROOT/dev (the host's, for /dev/net/tun and ptys), a
# tmpfs on ROOT/run and ROOT/tmp, the cache ARCHIVES on ROOT/var/cache/apt/archives (apt's downloaded .debs) and
# PIP_CACHE on ROOT/root/.cache/pip (pip's downloads), and each SRC directory read-only at the same path inside
# ROOT (the repository to clone); prints "ready"; then stays as PID 1 of the namespace, reaping orphans, until it
# is killed. Commands enter it with `nsenter --target <its pid> --mount --pid chroot ROOT ...`.
#
# Nothing is mounted on the host: every mount is in the private mount namespace and goes with it. When this
# process dies (it dies with unshare, which dies with the test), the kernel kills everything in the PID
# namespace, so the lab's daemons, routers and namespaces inside go too.
set -euo pipefail

root=$1 archives=$2 pipcache=$3
shift 3
[ "$$" = 1 ] || { echo "fresh_machine.sh: not PID 1 of a new PID namespace (run it under unshare --pid --fork)" >&2; exit 2; }

mount --bind "$root" "$root"          # / a mount point, as on a machine (`ip netns exec` makes / a slave)
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
mkdir -m 1777 "$root/run/lock"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount --bind "$archives" "$root/var/cache/apt/archives"
mkdir -p "$root/root/.cache/pip"
mount --bind "$pipcache" "$root/root/.cache/pip"
for src in "$@"; do
    mkdir -p "$root$src"
    mount --bind "$src" "$root$src"
    mount -o remount,bind,ro "$root$src"
done
echo ready

exec /usr/bin/python3 -c '
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:                 # PID 1: reap whatever is orphaned in here (the lab daemonises its router and peers)
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
'
