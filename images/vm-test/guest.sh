#!/bin/bash
# Runs inside the appliance, as root, from the host's 9p share (vpnrouter-vmtest.service; images/vm-test.sh).
# Its output and exit status go back to the host. The files beside it in images/vm-test/ are in the same
# directory here (the share, mounted on /mnt/vmtest).
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

passed=0
failed=0
check() {       # check DESCRIPTION COMMAND...: run it, report ok or FAIL with what it printed
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "ok    $what"
        passed=$((passed + 1))
    else
        echo "FAIL  $what"
        printf '%s\n' "$out" | tail -20 | sed 's/^/      /'
        failed=$((failed + 1))
    fi
}

echo "kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME"), machine-id $(cat /etc/machine-id)"
for module in ppp_generic pptp l2tp_ppp esp4; do
    check "module $module loads" modprobe "$module"
done
check "/dev/ppp is a character device" test -c /dev/ppp
check "vpnrouter --help" vpnrouter --help
check "sshd has host keys" test -s /etc/ssh/ssh_host_ed25519_key
check "ssh.service active" systemctl is-active ssh.service
check "the vagrant user may sudo without a password" sudo -n -u vagrant sudo -n true

echo
echo "units that failed:"
systemctl --no-pager --failed --plain --no-legend | sed 's/^/  /'
echo "vpnrouter-lab.service: $(systemctl is-active vpnrouter-lab.service)"
echo "boot: $(systemd-analyze time 2>&1 | head -1)"
systemd-analyze blame 2>/dev/null | head -5 | sed 's/^/  /'

echo
echo "guest: $passed passed, $failed failed"
[ "$failed" = 0 ]
