#!/bin/bash
# `make vm-test`: boot the appliance under QEMU (TCG) with a 9p share, let the image's vpnrouter-vmtest.service
# run a script from that share, and report what the script printed and its exit status (ours too).
#
#   images/vm-test.sh [SCRIPT]      default images/vm-test/guest.sh; every file of images/vm-test/ is shared
#
# Environment: VM_TEST_TIMEOUT (seconds, default 900), VM_TEST_LAB=0 to boot without vpnrouter-lab.service,
# VM_TEST_MEMORY (MiB, default 1536), VM_TEST_CMDLINE (more kernel arguments).
# QEMU's serial console goes to images/out/vm-test-console.log, what the script wrote to results/ in the share to
# images/out/vm-test-results/.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${IMAGE_OUT:-$HERE/out}
SCRIPT=${1:-$HERE/vm-test/guest.sh}
TIMEOUT=${VM_TEST_TIMEOUT:-900}
CONSOLE=$OUT/vm-test-console.log
RESULTS=$OUT/vm-test-results     # what the script left in results/ of the share
START=$SECONDS

say() { printf '[vm-test %4ds] %s\n' $((SECONDS - START)) "$*"; }
die() { echo "vm-test: $*" >&2; exit 1; }

for f in vpnrouter.qcow2 vmlinuz initrd.img; do
    [ -f "$OUT/$f" ] || die "$OUT/$f is missing: run \`make image\` first"
done
[ -f "$SCRIPT" ] || die "no script $SCRIPT"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing: run \`make image-deps\`"

SHARE=$(mktemp -d /tmp/vpnrouter-vmtest.XXXXXX)
QEMU_PID=""
cleanup() {
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true
    rm -rf "$SHARE"
}
trap cleanup EXIT
cp -a "$HERE/vm-test/." "$SHARE/"
cp "$SCRIPT" "$SHARE/test.sh"
chmod -R a+rwX "$SHARE"

# no login prompt on the serial console, so that systemd goes on reporting units there (the progress below)
cmdline="root=/dev/vda rw console=ttyS0 net.ifnames=0 vpnrouter.vmtest=1"
cmdline+=" systemd.mask=serial-getty@ttyS0.service systemd.show_status=1"
[ "${VM_TEST_LAB:-1}" = 0 ] && cmdline+=" vpnrouter.lab=0"
cmdline+=" ${VM_TEST_CMDLINE:-}"

say "booting $OUT/vpnrouter.qcow2 (TCG, snapshot) with $(basename "$SCRIPT"); console: $CONSOLE"
: > "$CONSOLE"
# restrict=on: the guest's NIC gets DHCP from QEMU and reaches nothing beyond it
qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 2 -m "${VM_TEST_MEMORY:-1536}" \
    -kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img" -append "$cmdline" \
    -drive "file=$OUT/vpnrouter.qcow2,format=qcow2,if=virtio,snapshot=on" \
    -virtfs "local,path=$SHARE,mount_tag=vmtest,security_model=none,id=vmtest" \
    -nic user,model=virtio-net-pci,restrict=on \
    -display none -monitor none -serial "file:$CONSOLE" -no-reboot &
QEMU_PID=$!

# Progress: milestones from the console as they appear.
milestones=("Linux version:kernel started"
            "Reached target.*[Bb]asic [Ss]ystem:basic system up"
            "Started.*OpenBSD Secure Shell:sshd up"
            "Starting.*vpnrouter-lab:lab starting"
            "Finished.*vpnrouter-lab:lab up, its three sessions connected"
            "Failed to start.*vpnrouter-lab:LAB FAILED (journalctl -u vpnrouter-lab in the VM)"
            "Reached target.*[Mm]ulti-[Uu]ser:multi-user target reached"
            "Starting.*vpnrouter-vmtest:test script running")
seen=()
status=""
while kill -0 "$QEMU_PID" 2>/dev/null; do
    for i in "${!milestones[@]}"; do
        [ -n "${seen[$i]:-}" ] && continue
        if grep -aq -E "${milestones[$i]%%:*}" "$CONSOLE"; then
            seen[$i]=1
            say "${milestones[$i]#*:}"
        fi
    done
    if [ $((SECONDS - START)) -ge "$TIMEOUT" ]; then
        say "timed out after ${TIMEOUT}s: last console lines:"
        tail -20 "$CONSOLE" | sed 's/^/    /'
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
        QEMU_PID=""
        die "the VM did not finish within ${TIMEOUT}s"
    fi
    sleep 1
done
wait "$QEMU_PID" || true
QEMU_PID=""
say "VM powered off"

status=$(cat "$SHARE/status" 2>/dev/null || true)
rm -rf "$RESULTS"
if [ -d "$SHARE/results" ]; then
    cp -a "$SHARE/results" "$RESULTS"
    say "the guest's results: $RESULTS"
fi
if [ -f "$SHARE/output" ]; then
    echo "----- output of $(basename "$SCRIPT") in the VM -----"
    cat "$SHARE/output"
    echo "-----"
fi
case $status in
    0) say "passed"; exit 0 ;;
    running) die "the script did not finish (VM stopped while it ran): see $CONSOLE" ;;
    "") tail -20 "$CONSOLE" | sed 's/^/    /'
        die "the test unit did not run (no status in the share): see $CONSOLE" ;;
    *) die "the script failed in the VM with exit status $status" ;;
esac
