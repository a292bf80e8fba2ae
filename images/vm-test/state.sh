# Sourced by guest.sh: vpnrouter.service keeps its tables ([state] file) across `systemctl restart` and a reboot.
#
# Boot 1 (state_before_reboot): the lab stops; in the root namespace, TAPs lan0 and wan0 (persistent, so that
# they stay in their bridges while the router restarts) in bridges br-lan and br-wan, a LAN host (namespace
# st-lan, 192.168.77.10) and a WAN host (st-wan, 198.51.100.10) on them, vpnrouter.service started. The LAN host
# opens a UDP flow (40000 -> 198.51.100.10:7000) and a TCP connection (to 198.51.100.10:7001) and pings on both
# (flows.py). `systemctl restart vpnrouter.service`: the new router must have taken both sessions up, with their
# ids, and the WAN host pushes a message on each (UDP to the router's outside port, with no packet from the LAN
# since the restart; TCP on the connection that stayed open), which must reach the LAN host, whose answers must
# get back. Then vpnrouter.service is enabled (vpnrouter-lab.service disabled), the hosts go, and the guest asks
# vm-test.sh for a second boot of the same disk, powering off cleanly (systemd stops vpnrouter.service, which
# writes the file).
#
# Boot 2 (state_after_reboot): vpnrouter.service started at boot and took the sessions up again with the same
# ids; the hosts are made again (new namespaces, so new MACs, which the router resolves by ARP), and a datagram
# from the WAN host on the restored UDP flow must reach the LAN host, and its answer the WAN host.
#
# What the router said goes to results/state-*.json and state-journal-boot*.txt (tests/appliance checks them).

ST_FILE=/var/lib/vpnrouter/router.state
ST_RUN=/run/vmtest-state                  # the flows' logs while they run (copied to results/ at the end)
ST_LAN=192.168.77.10
ST_WAN=198.51.100.10
ST_ROUTER_WAN=198.51.100.1

st_wait() {     # st_wait SECONDS COMMAND...: until the command succeeds
    local until=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -ge "$until" ] && return 1
        sleep 0.2
    done
}

st_ctl_ready() { st_wait 60 vpnrouter ctl status; }
st_check() { python3 "$HERE/state_check.py" "$@"; }     # st_check CHECK FILES...: state_check.py

st_topology() {    # bridges with the TAPs lan0 and wan0 (made persistent if the router has none yet), two hosts
    local br tap
    for tap in lan0 wan0; do
        ip link show "$tap" >/dev/null 2>&1 || ip tuntap add dev "$tap" mode tap || return 1
    done
    for br in br-lan br-wan; do
        ip link add "$br" type bridge forward_delay 0 || return 1
        sysctl -qw "net.ipv6.conf.$br.disable_ipv6=1"
        ip link set "$br" up
    done
    # a switch, not a firewall: where br_netfilter is loaded it would check bridged IPv4
    for table in iptables ip6tables arptables; do
        sysctl -qw "net.bridge.bridge-nf-call-$table=0" 2>/dev/null
    done
    ip link set lan0 master br-lan up && ip link set wan0 master br-wan up || return 1
    st_host st-lan br-lan "$ST_LAN/24" 192.168.77.1 && st_host st-wan br-wan "$ST_WAN/24" ""
}

st_host() {        # st_host NAMESPACE BRIDGE ADDRESS GATEWAY
    local ns=$1 br=$2 addr=$3 gw=$4
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip link add "v-$ns" type veth peer name eth0 netns "$ns" || return 1
    ip link set "v-$ns" master "$br" up
    ip -n "$ns" addr add "$addr" dev eth0 && ip -n "$ns" link set eth0 up || return 1
    [ -z "$gw" ] || ip -n "$ns" route add default via "$gw"
}

st_start() {       # st_start NAME NAMESPACE FLOWS-ARGS...: flows.py in the background, its pid in $ST_RUN/NAME.pid
    local name=$1 ns=$2
    shift 2
    ip netns exec "$ns" /usr/bin/python3 "$HERE/flows.py" --log "$ST_RUN/$name.log" "$@" \
        > "$ST_RUN/$name.out" 2>&1 &
    echo $! > "$ST_RUN/$name.pid"
    st_wait 30 grep -q '^ready' "$ST_RUN/$name.out"
}

st_signal() { kill "-$1" "$(cat "$ST_RUN/$2.pid")"; }      # st_signal USR1|USR2 NAME
st_seen() { st_wait "${3:-15}" grep -q -E "^[0-9.]+ $1" "$ST_RUN/$2.log"; }   # st_seen REGEX NAME [SECONDS]

st_status() {      # st_status NAME: ctl status --json, ctl sessions --json: results/state-{status,sessions}-NAME.json
    vpnrouter ctl status --json > "$RESULTS/state-status-$1.json" 2>&1
    vpnrouter ctl sessions --json > "$RESULTS/state-sessions-$1.json" 2>&1
}

st_results() {     # the flows' logs and the hosts' MACs into results/, with the boot's number
    local f
    for f in "$ST_RUN"/*.log; do [ -f "$f" ] && cp "$f" "$RESULTS/state-flows-$(basename "$f" .log)-boot$1.log"; done
    ip -n st-lan link show eth0 2>/dev/null | awk '/link\/ether/ {print $2}' > "$RESULTS/state-lan-mac-boot$1"
}

state_before_reboot() {
    local started=$SECONDS out
    mkdir -p "$ST_RUN"
    echo
    echo "vpnrouter.service keeps its tables across systemctl restart ([state] file $ST_FILE):"
    check "vpnrouter.service has StateDirectory=vpnrouter, mode 0700" sh -c \
        'test "$(systemctl show -P StateDirectory vpnrouter.service)" = vpnrouter &&
         test "$(systemctl show -P StateDirectoryMode vpnrouter.service)" = 0700'
    check "router.toml names the state file" grep -qx "file = \"$ST_FILE\"" /etc/vpnrouter/router.toml
    check "the image does not enable vpnrouter.service" sh -c \
        'test "$(systemctl is-enabled vpnrouter.service)" = disabled'
    check "no state file before vpnrouter.service ever ran" test ! -e "$ST_FILE"
    check "vpnrouter-lab.service stops" systemctl stop vpnrouter-lab.service
    check "TAPs lan0 and wan0 in bridges, a LAN host and a WAN host in namespaces" st_topology
    check "vpnrouter.service starts" systemctl start vpnrouter.service
    check "its control socket answers" st_ctl_ready
    vpnrouter ctl status --json > "$RESULTS/state-status-start.json" 2>&1
    check "it started with the appliance's state file, with nothing to restore" \
        st_check fresh "$RESULTS/state-status-start.json"
    check "/var/lib/vpnrouter is the router's own (mode 0700)" sh -c 'test "$(stat -c %a /var/lib/vpnrouter)" = 700'

    check "the WAN host listens (UDP 7000, TCP 7001)" \
        st_start wan st-wan --udp "$ST_WAN:7000" --tcp-listen "$ST_WAN:7001"
    check "the LAN host opens a TCP connection to the WAN host through the router" \
        st_start lan st-lan --udp "$ST_LAN:40000" --udp-peer "$ST_WAN:7000" --tcp-connect "$ST_WAN:7001"
    st_signal USR2 lan
    check "the LAN host's UDP ping is answered" st_seen "udp $ST_WAN:7000 pong" lan
    check "the LAN host's TCP ping is answered" st_seen "tcp $ST_WAN:7001 pong" lan
    st_status before
    check "the router has the UDP and the TCP session" st_check flows "$RESULTS/state-sessions-before.json"

    check "systemctl restart vpnrouter.service" systemctl restart vpnrouter.service
    check "the new router's control socket answers" st_ctl_ready
    vpnrouter ctl status --json > "$RESULTS/state-status-restart.json" 2>&1
    vpnrouter ctl status > "$RESULTS/state-status-restart.txt" 2>&1
    check "the new router took the sessions up from the state file" \
        st_check restored "$RESULTS/state-status-restart.json" 2
    st_signal USR1 wan
    check "after the restart, a UDP datagram from the WAN host reaches the LAN host on the restored session" \
        st_seen "udp $ST_WAN:7000 push" lan
    check "after the restart, the LAN host's UDP answer reaches the WAN host from the same outside port" \
        st_seen "udp $ST_ROUTER_WAN:40000 ack" wan
    check "after the restart, the TCP connection carries data from the WAN host to the LAN host" \
        st_seen "tcp $ST_WAN:7001 push" lan
    check "after the restart, the LAN host's answer on the TCP connection reaches the WAN host" \
        st_seen "tcp $ST_ROUTER_WAN:[0-9]+ ack" wan
    st_status restart
    check "the same sessions, with the same ids, carried it" \
        st_check same "$RESULTS/state-sessions-before.json" "$RESULTS/state-sessions-restart.json" --tcp --grown
    journalctl -b -u vpnrouter.service -o short-unix --no-pager > "$RESULTS/state-journal-boot1-before-reboot.txt" 2>&1
    st_results 1

    # For the second boot: vpnrouter.service at boot instead of the lab (for this disk only, not the image).
    check "vpnrouter.service enabled, vpnrouter-lab.service disabled (this VM's disk only)" \
        sh -c 'systemctl enable vpnrouter.service && systemctl disable vpnrouter-lab.service'
    # The hosts go as a reboot makes them go: their links first, so that nothing they close reaches the router.
    for ns in st-lan st-wan; do ip link del "v-$ns" 2>/dev/null; done
    for name in lan wan; do st_signal KILL "$name" 2>/dev/null; done
    wait 2>/dev/null
    ip netns del st-lan; ip netns del st-wan
    # A clean poweroff when this script ends (the unit's own is forced, which stops no unit): systemd stops
    # vpnrouter.service, which writes the state file. vm-test.sh then boots the same disk again.
    mkdir -p /run/systemd/system/vpnrouter-vmtest.service.d
    printf '[Unit]\nSuccessAction=poweroff\nFailureAction=poweroff\n' \
        > /run/systemd/system/vpnrouter-vmtest.service.d/clean-poweroff.conf
    check "this boot ends with a clean poweroff" sh -c \
        'systemctl daemon-reload && test "$(systemctl show -P SuccessAction vpnrouter-vmtest.service)" = poweroff'
    echo "state reboot" > "$HERE/reboot"
    echo "state phase (boot 1): $((SECONDS - started)) s"
}

state_after_reboot() {
    local started=$SECONDS port
    mkdir -p "$ST_RUN"
    echo
    echo "vpnrouter.service keeps its tables across a reboot ([state] file $ST_FILE):"
    check "vpnrouter.service is active after the reboot" systemctl is-active vpnrouter.service
    check "its control socket answers" st_ctl_ready
    journalctl -b -1 -u vpnrouter.service -o short-unix --no-pager > "$RESULTS/state-journal-boot1.txt" 2>&1
    journalctl -b 0 -u vpnrouter.service -o short-unix --no-pager > "$RESULTS/state-journal-boot2.txt" 2>&1
    check "the first boot's journal: vpnrouter.service stopped at poweroff and wrote the state file" python3 -c '
import re, sys
lines = open(sys.argv[1]).read().splitlines()
stop = [i for i, line in enumerate(lines) if re.search(r"Stopping vpnrouter\.service|Stopping vpnrouter on", line)]
written = [i for i, line in enumerate(lines) if re.search(r"state file \S+: \d+ sessions written", line)]
assert stop and written and written[-1] > stop[-1], (stop, written)' "$RESULTS/state-journal-boot1.txt"
    vpnrouter ctl status --json > "$RESULTS/state-status-reboot.json" 2>&1
    vpnrouter ctl status > "$RESULTS/state-status-reboot.txt" 2>&1
    vpnrouter ctl sessions --json > "$RESULTS/state-sessions-reboot-start.json" 2>&1
    check "after the reboot the router took the sessions up from the state file" \
        st_check restored "$RESULTS/state-status-reboot.json" 2
    check "the same sessions as before the reboot, with the same ids" st_check same \
        "$RESULTS/state-sessions-restart.json" "$RESULTS/state-sessions-reboot-start.json" --tcp
    check "the LAN and the WAN host made again (new namespaces), bridged to the router's TAPs" st_topology
    port=$(st_check flows "$RESULTS/state-sessions-reboot-start.json" 2>/dev/null | awk '$1 == "udp" {print $3}')
    check "the LAN host listens on its UDP port 40000 again" st_start lan st-lan --udp "$ST_LAN:40000"
    check "the WAN host is back on UDP 7000" \
        st_start wan st-wan --udp "$ST_WAN:7000" --udp-peer "$ST_ROUTER_WAN:${port:-0}"
    st_signal USR1 wan
    check "after the reboot, a UDP datagram from the WAN host reaches the LAN host (new MAC) on the restored session" \
        st_seen "udp $ST_WAN:7000 push" lan 20
    check "after the reboot, the LAN host's answer reaches the WAN host from the same outside port" \
        st_seen "udp $ST_ROUTER_WAN:40000 ack" wan
    st_status reboot
    check "the restored UDP session, with its id, carried it" st_check same \
        "$RESULTS/state-sessions-restart.json" "$RESULTS/state-sessions-reboot.json" --grown
    st_results 2
    check "the LAN host has another MAC than before the reboot" sh -c \
        'test -s "$1/state-lan-mac-boot2" && ! cmp -s "$1/state-lan-mac-boot1" "$1/state-lan-mac-boot2"' _ "$RESULTS"
    echo "state phase (boot 2): $((SECONDS - started)) s"
}
