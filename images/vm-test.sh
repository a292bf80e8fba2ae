#!/bin/bash
# `make vm-test`: boot the appliance under QEMU (TCG) with a 9p share, let the image's vpnrouter-vmtest.service
# run a script from that share, and report what the script printed and its exit status (ours too).
#
#   images/vm-test.sh [SCRIPT]      default images/vm-test/guest.sh; every file of images/vm-test/ is shared
#
# The VM runs on a qcow2 overlay of the image (in a temporary directory, removed at the end): the image itself never
# changes, and what a boot writes is there for the next. The script is told which boot it runs in by the file
# `boot` of the share (1, 2, ...); if it leaves a file `reboot` there, the VM is booted again from the same disk
# once it has powered off, and the script runs again (at most VM_TEST_BOOTS boots, default 2). What each boot
# printed is shown, and the exit status is 0 only if the script passed in every boot.
#
# Environment: VM_TEST_TIMEOUT (seconds for all boots together, default 900), VM_TEST_LAB=0 to boot without
# vpnrouter-lab.service, VM_TEST_MEMORY (MiB, default 1536), VM_TEST_CMDLINE (more kernel arguments),
# VM_TEST_BOOTS. QEMU's serial console goes to images/out/vm-test-console.log (every boot, one after the other),
# what the script wrote to results/ in the share to images/out/vm-test-results/.
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
for tool in qemu-system-x86_64 qemu-img; do
    command -v "$tool" >/dev/null || die "$tool is missing: run \`make image-deps\`"
done

SHARE=$(mktemp -d /tmp/vpnrouter-vmtest.XXXXXX)
DISKDIR=$(mktemp -d /tmp/vpnrouter-vmdisk.XXXXXX)     # the overlay, out of the guest's sight
QEMU_PID=""
cleanup() {
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true
    rm -rf "$SHARE" "$DISKDIR"
}
trap cleanup EXIT
cp -a "$HERE/vm-test/." "$SHARE/"
cp "$SCRIPT" "$SHARE/test.sh"
chmod -R a+rwX "$SHARE"
DISK=$DISKDIR/disk.qcow2
qemu-img create -q -f qcow2 -F qcow2 -b "$OUT/vpnrouter.qcow2" "$DISK"

# no login prompt on the serial console, so that systemd goes on reporting units there (the progress below)
cmdline="root=/dev/vda rw console=ttyS0 net.ifnames=0 vpnrouter.vmtest=1"
cmdline+=" systemd.mask=serial-getty@ttyS0.service systemd.show_status=1"
[ "${VM_TEST_LAB:-1}" = 0 ] && cmdline+=" vpnrouter.lab=0"
cmdline+=" ${VM_TEST_CMDLINE:-}"

# Progress: milestones from the console as they appear.
milestones=("Linux version:kernel started"
            "Reached target.*[Bb]asic [Ss]ystem:basic system up"
            "Started.*OpenBSD Secure Shell:sshd up"
            "Starting.*vpnrouter-lab:lab starting"
            "Finished.*vpnrouter-lab:lab up, its three sessions connected"
            "Failed to start.*vpnrouter-lab:LAB FAILED (journalctl -u vpnrouter-lab in the VM)"
            "Started.*vpnrouter\.service:vpnrouter.service started at boot"
            "Reached target.*[Mm]ulti-[Uu]ser:multi-user target reached"
            "Starting.*vpnrouter-vmtest:test script running"
            "Stopping.*vpnrouter\.service:vpnrouter.service stopping (a clean poweroff)")

boot_vm() {     # boot_vm N: boot the disk, wait until the VM powers off; the console is appended to $CONSOLE
    local n=$1 from seen=() i
    echo "$n" > "$SHARE/boot"
    printf '\n===== vm-test.sh: boot %d =====\n' "$n" >> "$CONSOLE"
    from=$(($(stat -c %s "$CONSOLE") + 1))
    say "boot $n of $DISK (TCG; overlay of $OUT/vpnrouter.qcow2) with $(basename "$SCRIPT"); console: $CONSOLE"
    # restrict=on: the guest's NIC gets DHCP from QEMU and reaches nothing beyond it
    qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 2 -m "${VM_TEST_MEMORY:-1536}" \
        -kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img" -append "$cmdline" \
        -drive "file=$DISK,format=qcow2,if=virtio" \
        -virtfs "local,path=$SHARE,mount_tag=vmtest,security_model=none,id=vmtest" \
        -nic user,model=virtio-net-pci,restrict=on \
        -display none -monitor none -chardev "file,id=console,path=$CONSOLE,append=on" -serial chardev:console \
        -no-reboot &
    QEMU_PID=$!
    while kill -0 "$QEMU_PID" 2>/dev/null; do
        for i in "${!milestones[@]}"; do
            [ -n "${seen[$i]:-}" ] && continue
            if grep -aq -E "${milestones[$i]%%:*}" < <(tail -c +"$from" "$CONSOLE"); then
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
            die "the VM did not finish within ${TIMEOUT}s (boot $n)"
        fi
        sleep 1
    done
    wait "$QEMU_PID" || true
    QEMU_PID=""
    say "boot $n: VM powered off"
}

: > "$CONSOLE"
boots=()        # the status of each boot
n=1
while :; do
    rm -f "$SHARE/reboot" "$SHARE/status" "$SHARE/output"
    boot_vm "$n"
    boots+=("$(cat "$SHARE/status" 2>/dev/null || true)")
    [ -f "$SHARE/output" ] && mv "$SHARE/output" "$SHARE/output.$n"
    if [ -f "$SHARE/reboot" ] && [ "$n" -lt "${VM_TEST_BOOTS:-2}" ]; then
        say "boot $n: the script asked for another boot of the same disk ($(cat "$SHARE/reboot"))"
        n=$((n + 1))
        continue
    fi
    [ -f "$SHARE/reboot" ] && boots+=("reboot")       # asked for one more than VM_TEST_BOOTS allows
    break
done

rm -rf "$RESULTS"
if [ -d "$SHARE/results" ]; then
    cp -a "$SHARE/results" "$RESULTS"
    say "the guest's results: $RESULTS"
fi
for i in $(seq 1 "$n"); do
    if [ -f "$SHARE/output.$i" ]; then
        echo "----- output of $(basename "$SCRIPT") in the VM (boot $i) -----"
        cat "$SHARE/output.$i"
        echo "-----"
    fi
done
failed=0
for i in "${!boots[@]}"; do
    status=${boots[$i]}
    case $status in
        0) say "boot $((i + 1)): passed" ;;
        running) say "boot $((i + 1)): the script did not finish (VM stopped while it ran): see $CONSOLE"; failed=1 ;;
        reboot) say "the script asked for more than ${VM_TEST_BOOTS:-2} boots"; failed=1 ;;
        "") say "boot $((i + 1)): the test unit did not run (no status in the share): see $CONSOLE"
            tail -20 "$CONSOLE" | sed 's/^/    /'
            failed=1 ;;
        *) say "boot $((i + 1)): the script failed in the VM with exit status $status"; failed=1 ;;
    esac
done
[ "$failed" = 0 ] || die "failed (boots: ${boots[*]})"
say "passed (${#boots[@]} boots)"
