#!/bin/bash
# Runs inside the appliance, as root, from the host's 9p share (vpnrouter-vmtest.service; images/vm-test.sh).
# Its output and exit status go back to the host, and what it writes to results/ beside it is copied to
# images/out/vm-test-results/ (tests/appliance reads sessions.json there). The files beside it in images/vm-test/
# are in the same directory here (the share, mounted on /mnt/vmtest).
#
# It checks the system, then the lab that vpnrouter-lab.service brought up at boot (c1 PPTP and c2 L2TP to s1,
# c3 IPsec to s2): it adds a second client for each protocol (c2 PPTP to s1 and c1 IPsec to s2, the same servers;
# c3 L2TP to s2, see below) and checks that all six tunnels carry traffic through vpnrouter, with the kernel's
# peers: pppd with MPPE, xl2tpd on the kernel's L2TP, strongSwan on the kernel's ESP; then WireGuard (the kernel's)
# and OpenVPN over UDP and TCP from c1 and c2 to s1. Then it stops the lab and
# checks that vpnrouter.service keeps its sessions across `systemctl restart` and a reboot (state.sh): it asks
# vm-test.sh for a second boot of the same disk, in which it runs again (the file boot in the share says 2) and
# does only the checks after the reboot.
#
# Why the second L2TP client goes to the other server: xl2tpd on the kernel's L2TP gives each tunnel a UDP socket
# connected to the LAC's address and port. Two LACs behind a NAT that keeps their port 1701 ([l2tp] port =
# "preserve", the default) share that address and port, so at one LNS their sockets collide and the first
# tunnel's data reaches the second's socket, where the kernel does not find its session: lost. (The userspace
# xl2tpd on the build machines demultiplexes by Tunnel ID and serves both; see tests/integration/test_l2tp_peers.)
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HERE=$(cd "$(dirname "$0")" && pwd)
RESULTS=$HERE/results
PEERS=/var/lib/vpnrouter-lab/vr
mkdir -p "$RESULTS"

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
in_ns() { local ns=$1; shift; ip netns exec "vr-$ns" "$@"; }
has() { grep -q -E "$1" "$2"; }       # has REGEX FILE
finish() {      # the summary, and the exit status: 0 when every check passed
    echo
    echo "units that failed:"
    systemctl --no-pager --failed --plain --no-legend | sed 's/^/  /'
    echo "vpnrouter-lab.service: $(systemctl is-active vpnrouter-lab.service)," \
        "vpnrouter.service: $(systemctl is-active vpnrouter.service)"
    echo "boot: $(systemd-analyze time 2>&1 | head -1)"
    systemd-analyze blame 2>/dev/null | head -5 | sed 's/^/  /'

    echo
    echo "guest: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit
}
. "$HERE/state.sh"      # the router's tables across a restart and a reboot (vpnrouter.service)

# vm-test.sh boots the disk again when this script asks for it (the file reboot in the share), and says which
# boot this is in the file boot.
BOOT=$(cat "$HERE/boot" 2>/dev/null || echo 1)
echo "boot $BOOT: kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME"), machine-id $(cat /etc/machine-id)"
if [ "$BOOT" -ge 2 ]; then
    state_after_reboot
    finish
fi
for module in ppp_generic pptp l2tp_ppp esp4; do
    check "module $module loads" modprobe "$module"
done
check "/dev/ppp is a character device" test -c /dev/ppp
check "vpnrouter --help" vpnrouter --help
check "sshd has host keys" test -s /etc/ssh/ssh_host_ed25519_key
check "ssh.service active" systemctl is-active ssh.service
check "the vagrant user may sudo without a password" sudo -n -u vagrant sudo -n true

if [ "$(systemctl is-enabled vpnrouter-lab.service 2>/dev/null)" = enabled ] && ! grep -qw vpnrouter.lab=0 /proc/cmdline; then
    echo
    echo "lab (vpnrouter-lab.service at boot: c1 pptp s1, c2 l2tp s1, c3 ipsec s2):"
    check "vpnrouter-lab.service is active" systemctl is-active vpnrouter-lab.service
    check "vpnrouter tui's default socket reaches the lab's router" vpnrouter ctl status
    check "the router forwards established flows by the fast path (compiled in the wheel)" \
        sh -c 'vpnrouter ctl status | grep -q "^dataplane   fast path (C)"'
    vpnrouter lab status --json > "$RESULTS/lab-status.json" 2>&1
    check "the lab runs the real pppd, kernel ESP and the kernel's WireGuard" python3 -c '
import json, sys
peers = json.load(open(sys.argv[1]))["peers"]
assert peers == {"ppp": "pppd", "esp": "kernel", "wireguard": "kernel"}, peers' "$RESULTS/lab-status.json"
    check "c2 connects PPTP to s1 (the second PPTP client)" vpnrouter lab connect c2 pptp s1
    check "c3 connects L2TP to s2 (the second L2TP client)" vpnrouter lab connect c3 l2tp s2
    check "c1 connects IPsec to s2 (the second IPsec client)" vpnrouter lab connect c1 ipsec s2
    for pair in c1:pptp c2:pptp c2:l2tp c3:l2tp c3:ipsec c1:ipsec; do
        client=${pair%:*} proto=${pair#*:}
        check "$client $proto carries traffic (20 pings through the tunnel)" vpnrouter lab ping "$client" "$proto" -c 20
    done
    for client in c1 c2; do
        check "$client's PPTP call has 128-bit MPPE" has "MPPE 128-bit (stateless|stateful) compression enabled" \
            "$PEERS/$client/pptp/pppd.log"
        check "$client's PPTP call is on its PPP interface" in_ns "$client" ip -4 addr show dev vpn-pptp
    done
    for client in c2 c3; do
        check "$client's xl2tpd uses the kernel's L2TP" has "[Uu]sing l2tp kernel support" \
            "$PEERS/$client/l2tp/xl2tpd.out"
        check "$client's L2TP call runs pppd with pppol2tp" has "PPPoL2TP options" \
            "$PEERS/$client/l2tp/pppd.log"
    done
    for client in c1 c3; do
        check "$client's ESP SAs are in the kernel (XFRM, in UDP)" sh -c \
            "ip netns exec vr-$client ip xfrm state | grep -q 'encap type espinudp'"
    done
    for client in c1 c2; do      # the VPNs that need no passthrough, two clients to one server
        for proto in wireguard openvpn openvpn-tcp; do
            check "$client connects $proto to s1" vpnrouter lab connect "$client" "$proto" s1
        done
    done
    for client in c1 c2; do
        for proto in wireguard openvpn openvpn-tcp; do
            check "$client $proto carries traffic (20 pings through the tunnel)" vpnrouter lab ping "$client" "$proto" -c 20
        done
        check "$client's WireGuard is the kernel's" has "wireguard: the kernel's module" \
            "$PEERS/$client/wireguard/wireguard.log"
    done
    vpnrouter ctl sessions --json > "$RESULTS/sessions.json" 2>&1
    check "the router's sessions were read" test -s "$RESULTS/sessions.json"
    for f in "$PEERS"/c*/*/pppd.log "$PEERS"/c*/l2tp/xl2tpd.out "$PEERS"/c*/ipsec/charon.log; do
        [ -f "$f" ] && cp "$f" "$RESULTS/$(echo "${f#$PEERS/}" | tr / _)"
    done

    # An IPoE lab beside it (prefix vw): the router on an IPv6 WAN, the BR's and the AFTR's softwires the
    # kernel's ip6tnl (the build machines' kernel has none: there tests/integration/test_wan_modes.py runs).
    for wan in map-e ds-lite; do
        check "lab up --wan $wan" vpnrouter lab --prefix vw --clients 1 --servers 1 up --wan "$wan"
        check "its softwire is the kernel's ip6tnl ($wan)" sh -c \
            "vpnrouter lab --prefix vw status --json | grep -q \"the kernel's ip6tnl\""
        check "c1 pings s1 through the $wan softwire" ip netns exec vw-c1 ping -c 3 -W 5 198.51.100.10
        check "c1 pings s1 over native IPv6 ($wan)" ip netns exec vw-c1 ping -6 -c 3 -W 5 2001:db8:5::10
        check "c1 connects WireGuard to s1 over IPv6 ($wan)" vpnrouter lab --prefix vw connect c1 wireguard s1 --ipv6
        vpnrouter lab --prefix vw status > "$RESULTS/lab-$wan-status.txt" 2>&1
        vpnrouter lab --prefix vw down > /dev/null 2>&1
    done
fi

# Last: it stops the lab, and ends in a second boot of this disk.
state_before_reboot
finish
