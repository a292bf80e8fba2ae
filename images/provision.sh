#!/bin/bash
# Provisioning of the vpnrouter appliance: one script for both ways of making it.
#
#   * images/build.sh runs it inside the debootstrapped root file system (chroot, no network) to build the
#     image: `provision.sh system --image --vagrant-key FILE`, then `provision.sh vpnrouter --wheels DIR`.
#   * vagrant/Vagrantfile runs it on a public Debian 12 box (debian/bookworm64) that has network:
#     `provision.sh all --src DIR` installs the Debian packages, configures the system, installs vpnrouter
#     from the source tree synced to DIR (its Python dependencies from PyPI) and starts the lab.
#
# `provision.sh packages` prints the Debian packages the appliance is made of (build.sh reads its cache key
# from this list). The script is self-contained, since Vagrant uploads it alone into the guest.
set -euo pipefail

# The appliance's Debian packages: Debian 12's stock kernel, the VPN peers the lab runs, and what Vagrant needs.
PACKAGES=(
    linux-image-amd64 systemd-sysv udev kmod dbus netbase procps iproute2 iputils-ping ethtool nftables
    iperf3 tcpdump
    ppp pptpd pptp-linux xl2tpd openvpn openssl wireguard-tools wireguard-go
    strongswan strongswan-charon strongswan-swanctl charon-systemd libcharon-extra-plugins
    libstrongswan-standard-plugins libstrongswan-extra-plugins
    python3 python3-venv
    sudo openssh-server rsync less
)
# Daemons the packages enable in the root namespace: the lab runs its own instances in namespaces instead.
IDLE_SERVICES=(pptpd.service xl2tpd.service strongswan-starter.service ipsec.service strongswan.service openvpn.service
               iperf3.service rsync.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer
               fstrim.timer)
VENV=/opt/vpnrouter

say() { echo "provision: $*"; }
die() { echo "provision: $*" >&2; exit 1; }

usage() {
    cat <<EOF
usage: provision.sh packages
       provision.sh system [--image] [--vagrant-key FILE]
       provision.sh vpnrouter (--wheels DIR | --src DIR)
       provision.sh all --src DIR [--no-lab]
EOF
    exit 2
}

# --- system ------------------------------------------------------------------------------------------------

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_units() {
    mkdir -p /etc/vpnrouter /usr/local/lib/systemd/system
    [ -e /etc/vpnrouter/router.toml ] || cat > /etc/vpnrouter/router.toml <<'EOF'
# vpnrouter.service: the router on two TAP ports of this machine (see README.md, "Running the router").
# Put the TAPs into bridges with this machine's LAN and WAN interfaces to route real traffic.
[lan]
tap = "lan0"
address = "192.168.77.1/24"

[wan]
tap = "wan0"
address = "198.51.100.1/24"

[control]
socket = "/run/vpnrouter/control.sock"

[state]
# The router's tables (NAT mappings and sessions, PPTP calls, L2TP tunnels, IPsec associations): written when
# it stops and every interval seconds, taken up when it starts, so kept across restarts and reboots.
file = "/var/lib/vpnrouter/router.state"
# interval = 60

[passthrough]
pptp = true
l2tp = true
ipsec = true
EOF

    cat > /usr/local/lib/systemd/system/vpnrouter.service <<'EOF'
[Unit]
Description=vpnrouter on TAP ports lan0 and wan0
After=network.target
# Both listen on the default control socket, /run/vpnrouter/control.sock: one or the other.
Conflicts=vpnrouter-lab.service

[Service]
ExecStart=/usr/local/bin/vpnrouter run --config /etc/vpnrouter/router.toml
RuntimeDirectory=vpnrouter
# /var/lib/vpnrouter, owner only: the [state] file of router.toml, kept across restarts and reboots
StateDirectory=vpnrouter
StateDirectoryMode=0700
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF

    # The lab's router listens on the lab's own socket; the link makes `vpnrouter tui` and `vpnrouter ctl`
    # find it on the default socket with no arguments.
    cat > /usr/local/lib/systemd/system/vpnrouter-lab.service <<'EOF'
[Unit]
Description=vpnrouter lab with a PPTP, an L2TP and an IPsec session
After=network.target
Conflicts=vpnrouter.service
ConditionKernelCommandLine=!vpnrouter.lab=0
# a slow machine (QEMU without KVM) may miss a timeout of the lab: `lab up` starts again from nothing
StartLimitIntervalSec=30min
StartLimitBurst=3

[Service]
Type=oneshot
RemainAfterExit=yes
Restart=on-failure
RestartSec=5
RuntimeDirectory=vpnrouter
RuntimeDirectoryPreserve=yes
TimeoutStartSec=15min
ExecStart=/usr/local/bin/vpnrouter lab up
ExecStart=/bin/ln -sfn /run/vpnrouter-lab/vr/control.sock /run/vpnrouter/control.sock
ExecStart=/usr/local/bin/vpnrouter lab connect c1 pptp s1
ExecStart=/usr/local/bin/vpnrouter lab connect c2 l2tp s1
ExecStart=/usr/local/bin/vpnrouter lab connect c3 ipsec s2
ExecStop=/usr/local/bin/vpnrouter lab down
ExecStopPost=/bin/rm -f /run/vpnrouter/control.sock

[Install]
WantedBy=multi-user.target
EOF

    # VM tests (images/vm-test.sh): run the script the host shares over 9p, keep its output there, power off.
    cat > /usr/local/lib/systemd/system/vpnrouter-vmtest.service <<'EOF'
[Unit]
Description=vpnrouter VM test from the 9p share
ConditionKernelCommandLine=vpnrouter.vmtest=1
After=multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
StandardOutput=journal+console
ExecStartPre=/bin/mkdir -p /mnt/vmtest
ExecStartPre=/bin/mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmtest /mnt/vmtest
ExecStart=/bin/sh -c 'cd /mnt/vmtest && echo running > status && /bin/bash ./test.sh > output 2>&1; echo $? > status; sync'
TimeoutStartSec=30min

[Install]
WantedBy=multi-user.target
EOF
}

first_boot() {
    # Fresh SSH host keys on first boot (the image ships none): Ed25519 and ECDSA, which take a moment where
    # an RSA key takes half a minute (QEMU without KVM).
    cat > /usr/local/lib/systemd/system/ssh-hostkeys.service <<'EOF'
[Unit]
Description=Generate SSH host keys (first boot)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -N "" -t ed25519 -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -N "" -t ecdsa -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=ssh.service
EOF
    mkdir -p /etc/ssh/sshd_config.d
    printf 'HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n' \
        > /etc/ssh/sshd_config.d/10-vpnrouter-hostkeys.conf
}

networkd() {
    mkdir -p /etc/systemd/network
    cat > /etc/systemd/network/80-dhcp.network <<'EOF'
[Match]
Name=eth* en*

[Network]
DHCP=ipv4
EOF
    systemctl enable systemd-networkd.service >/dev/null 2>&1
    systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1
}

vagrant_user() {
    local key=$1
    if ! id vagrant >/dev/null 2>&1; then
        useradd --create-home --shell /bin/bash --user-group vagrant
        usermod -p '*' vagrant          # no password: key login only
    fi
    if [ -n "$key" ] && [ ! -s /home/vagrant/.ssh/authorized_keys ]; then
        install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh
        install -m 600 -o vagrant -g vagrant "$key" /home/vagrant/.ssh/authorized_keys
    fi
    printf 'Defaults:vagrant !requiretty\nvagrant ALL=(ALL) NOPASSWD: ALL\n' > /etc/sudoers.d/vagrant
    chmod 440 /etc/sudoers.d/vagrant
}

cmd_system() {
    local image=0 key=""
    while [ $# -gt 0 ]; do
        case $1 in
            --image) image=1 ;;
            --vagrant-key) key=$2; shift ;;
            *) usage ;;
        esac
        shift
    done
    [ "$image" = 1 ] || install_packages
    say "vagrant user, sudo, units"
    vagrant_user "$key"
    write_units
    first_boot
    local unit
    for unit in "${IDLE_SERVICES[@]}"; do
        systemctl disable "$unit" >/dev/null 2>&1 || true
    done
    systemctl enable ssh.service ssh-hostkeys.service vpnrouter-lab.service vpnrouter-vmtest.service >/dev/null 2>&1
    printf 'ppp_generic\npptp\nl2tp_ppp\n' > /etc/modules-load.d/vpnrouter.conf
    if [ "$image" = 1 ]; then
        networkd
        echo vpnrouter > /etc/hostname
        printf '127.0.0.1\tlocalhost\n127.0.1.1\tvpnrouter\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
        printf '/dev/vda\t/\text4\trw,errors=remount-ro\t0\t1\n' > /etc/fstab
        echo 'vpnrouter appliance: `sudo vpnrouter tui` shows the lab (vpnrouter-lab.service).' > /etc/motd
    fi
}

# --- vpnrouter ---------------------------------------------------------------------------------------------

cmd_vpnrouter() {
    local wheels="" src=""
    while [ $# -gt 0 ]; do
        case $1 in
            --wheels) wheels=$2; shift ;;
            --src) src=$2; shift ;;
            *) usage ;;
        esac
        shift
    done
    [ -n "$wheels$src" ] || usage
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    if [ -n "$wheels" ]; then
        say "vpnrouter into $VENV from the wheels in $wheels (no network)"
        "$VENV/bin/pip" install -q --no-index --find-links "$wheels" vpnrouter
    else
        say "vpnrouter into $VENV from $src (dependencies from PyPI)"
        "$VENV/bin/pip" install -q --upgrade pip
        # a copy, so that the build leaves nothing in the synced folder
        local tmp
        tmp=$(mktemp -d)
        cp -a "$src/." "$tmp/"
        rm -rf "$tmp/build" "$tmp"/*.egg-info
        "$VENV/bin/pip" install -q "$tmp"
        rm -rf "$tmp"
    fi
    ln -sfn "$VENV/bin/vpnrouter" /usr/local/bin/vpnrouter
    /usr/local/bin/vpnrouter --help >/dev/null
}

# --- all (a running machine: the public box) -------------------------------------------------------------------

cmd_all() {
    local src="" lab=1
    while [ $# -gt 0 ]; do
        case $1 in
            --src) src=$2; shift ;;
            --no-lab) lab=0 ;;
            *) usage ;;
        esac
        shift
    done
    [ -n "$src" ] || usage
    cmd_system
    cmd_vpnrouter --src "$src"
    systemctl daemon-reload
    local m
    for m in ppp_generic pptp l2tp_ppp; do modprobe "$m" || true; done
    if [ "$lab" = 1 ]; then
        say "starting vpnrouter-lab.service (the lab and three VPN sessions)"
        systemctl restart vpnrouter-lab.service || { journalctl -u vpnrouter-lab.service --no-pager | tail -40; exit 1; }
    fi
}

[ $# -ge 1 ] || usage
action=$1
shift
case $action in
    packages) echo "${PACKAGES[@]}" ;;
    system) cmd_system "$@" ;;
    vpnrouter) cmd_vpnrouter "$@" ;;
    all) cmd_all "$@" ;;
    *) usage ;;
esac
