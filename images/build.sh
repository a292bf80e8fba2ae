#!/bin/bash
# Build the vpnrouter appliance (`make image`): Debian 12 from Debian's packages, with vpnrouter from this checkout.
#
# Layers, each cached under $IMAGE_CACHE with the key it was built from:
#   base       debootstrap --variant=minbase with the packages `provision.sh packages` lists, from the mirror
#              apt is configured with                                                  key: packages, suite, mirror
#   system     provision.sh system --image: vagrant user, sudo, networkd, units, ...   key: base + provision.sh + key
#   vpnrouter  a venv in /opt/vpnrouter from wheels built here (no network inside)     key: system + the sources
# then the outputs in $IMAGE_OUT: vpnrouter.qcow2 (ext4 made with mkfs.ext4 -d: no partitions, no loop devices),
# vmlinuz, initrd.img and vpnrouter-libvirt.box (+ vpnrouter-libvirt.json, the catalogue Vagrant reads).
# Nothing is redone when no key changed. Needs root (debootstrap, chroot).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
OUT=${IMAGE_OUT:-$HERE/out}
CACHE=${IMAGE_CACHE:-/var/cache/vpnrouter-image}
SUITE=bookworm
SIZE=${IMAGE_SIZE:-4G}          # the guest's root file system (sparse: the qcow2 holds only what is used)
HOST_PYTHON=/usr/bin/python3    # Debian 12's, the same Python as the image's
BOX_NAME=vpnrouter
START=$SECONDS

step() { printf '[image %4ds] %s\n' $((SECONDS - START)) "$*"; }
die() { echo "image: $*" >&2; exit 1; }
sha() { sha256sum | cut -c1-16; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot)"
for tool in debootstrap mkfs.ext4 qemu-img unshare chroot "$HOST_PYTHON"; do
    command -v "$tool" >/dev/null || die "$tool is missing: run \`make image-deps\`"
done

mkdir -p "$CACHE" "$OUT"
exec 9>"$CACHE/lock"
flock -n 9 || { step "waiting for another build using $CACHE"; flock 9; }

# --- keys -----------------------------------------------------------------------------------------------------

# The Debian mirror and the security mirror, read from apt's own sources (one-line and deb822 formats).
read -r MIRROR SECURITY < <("$HOST_PYTHON" "$HERE/apt_sources.py" "$SUITE")
[ -n "${MIRROR:-}" ] || die "no Debian mirror for $SUITE in apt's sources"

VAGRANT_KEY=$(dpkg -L vagrant 2>/dev/null | grep -m1 '/keys/vagrant\.pub$' || true)
[ -n "$VAGRANT_KEY" ] && [ -f "$VAGRANT_KEY" ] || die "vagrant's insecure public key not found (Debian package vagrant): run \`make image-deps\`"

PACKAGES=$(bash "$HERE/provision.sh" packages)
BASE_KEY=$(echo "minbase $SUITE $MIRROR $PACKAGES" | sha)
SYSTEM_KEY=$(cat <(echo "$BASE_KEY $SECURITY") "$HERE/provision.sh" "$VAGRANT_KEY" | sha)

# The files that go into the wheel: tracked and untracked (not ignored) files of the package.
SOURCES=$(mktemp)
WORK=$(mktemp -d)
trap 'rm -rf "$SOURCES" "$WORK"' EXIT
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -co --exclude-standard -- pyproject.toml setup.py README.md router tui
else
    (cd "$ROOT" && find pyproject.toml setup.py README.md router tui -type f)
fi | grep -v -e '__pycache__' -e '\.pyc$' | sort -u | while read -r f; do if [ -f "$ROOT/$f" ]; then echo "$f"; fi; done > "$SOURCES"
SOURCE_KEY=$( (cd "$ROOT" && tr '\n' '\0' < "$SOURCES" | xargs -0 sha256sum) | sha)
DEPS_KEY=$(cat "$ROOT/pyproject.toml" | sha)
APP_KEY=$(echo "$SYSTEM_KEY $SOURCE_KEY $DEPS_KEY" | sha)
IMAGE_KEY=$(cat <(echo "$APP_KEY $SIZE") "$HERE/build.sh" "$HERE/box/Vagrantfile" | sha)

outputs=("$OUT/vpnrouter.qcow2" "$OUT/vmlinuz" "$OUT/initrd.img" "$OUT/vpnrouter-libvirt.box" "$OUT/vpnrouter-libvirt.json")
up_to_date=1
for f in "${outputs[@]}"; do [ -f "$f" ] || up_to_date=0; done
if [ "$up_to_date" = 1 ] && [ "$(cat "$OUT/.key" 2>/dev/null)" = "$IMAGE_KEY" ]; then
    step "up to date ($OUT, key $IMAGE_KEY)"
    exit 0
fi
rm -f "$OUT/.key"

quiet_pip() {   # pip's output less its warnings about configured local indexes that do not exist
    grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" || true
}

in_root() {    # run a command chrooted in $1, with /proc, /sys and /dev mounted for it alone
    local root=$1
    shift
    unshare --mount --propagation private /bin/bash -c '
        root=$1; shift
        mount -t proc proc "$root/proc" && mount -t sysfs sysfs "$root/sys" && mount --rbind /dev "$root/dev" &&
        exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"' in_root "$root" "$@"
}

debootstrap_progress() {
    local line phase="" word n=0 t0=$SECONDS
    while IFS= read -r line; do
        [[ $line == "I: "* ]] || continue
        word=${line#I: }
        word=${word%% *}
        [ "$word" = Validating ] && continue        # alternates with Retrieving: one phase
        if [ "$word" != "$phase" ]; then
            phase=$word
            n=0
        elif (( ++n % 50 )); then
            continue
        fi
        printf '    %4ds %s\n' $((SECONDS - t0)) "${line#I: }"
    done
}

# --- base: debootstrap -----------------------------------------------------------------------------------------

BASE=$CACHE/base
if [ -d "$BASE" ] && [ "$(cat "$CACHE/base.key" 2>/dev/null)" = "$BASE_KEY" ]; then
    step "base: cached (debootstrap skipped; key $BASE_KEY)"
else
    step "base: debootstrap $SUITE from $MIRROR (about 2 minutes; .debs cached in $CACHE/debs)"
    rm -rf "$BASE" "$BASE.tmp" "$CACHE/base.key"
    mkdir -p "$CACHE/debs" "$BASE.tmp"
    # its own mount namespace: whatever debootstrap mounts in the target goes away with it, even on failure
    # progress: each phase as it starts, then every 50th package
    if ! unshare --mount --propagation private debootstrap --variant=minbase --components=main \
            --cache-dir="$CACHE/debs" --include="$(echo $PACKAGES | tr ' ' ',')" \
            "$SUITE" "$BASE.tmp" "$MIRROR" 2>&1 | tee "$CACHE/debootstrap.log" \
            | debootstrap_progress; then
        tail -30 "$CACHE/debootstrap.log" >&2
        die "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    rm -f "$BASE.tmp"/var/cache/apt/archives/*.deb
    mv "$BASE.tmp" "$BASE"
    echo "$BASE_KEY" > "$CACHE/base.key"
    step "base: done"
fi

# --- system: provision.sh system --image -----------------------------------------------------------------------

ROOTFS=$CACHE/rootfs
if [ -d "$ROOTFS" ] && [ "$(cat "$CACHE/system.key" 2>/dev/null)" = "$SYSTEM_KEY" ]; then
    step "system: cached (key $SYSTEM_KEY)"
else
    step "system: copy of the base, then provision.sh system --image"
    rm -rf "$ROOTFS" "$CACHE/system.key" "$CACHE/app.key"
    cp -a "$BASE" "$ROOTFS"
    {
        echo "deb $MIRROR $SUITE main"
        echo "deb $MIRROR $SUITE-updates main"
        [ "$SECURITY" = - ] || echo "deb $SECURITY $SUITE-security main"
    } > "$ROOTFS/etc/apt/sources.list"
    install -m 755 "$HERE/provision.sh" "$ROOTFS/tmp/provision.sh"
    install -m 644 "$VAGRANT_KEY" "$ROOTFS/tmp/vagrant.pub"
    in_root "$ROOTFS" /tmp/provision.sh system --image --vagrant-key /tmp/vagrant.pub
    rm -f "$ROOTFS/tmp/provision.sh" "$ROOTFS/tmp/vagrant.pub"
    echo "$SYSTEM_KEY" > "$CACHE/system.key"
fi

# --- vpnrouter: wheels built here, installed inside without network ------------------------------------------------

if [ "$(cat "$CACHE/app.key" 2>/dev/null)" = "$APP_KEY" ] && [ -x "$ROOTFS/opt/vpnrouter/bin/vpnrouter" ]; then
    step "vpnrouter: cached (key $APP_KEY)"
else
    rm -f "$CACHE/app.key"
    PYENV=$CACHE/wheel-venv
    [ -x "$PYENV/bin/pip" ] || { step "vpnrouter: a venv to build wheels with ($HOST_PYTHON)"; "$HOST_PYTHON" -m venv "$PYENV"; }
    mkdir -p "$WORK/src" "$WORK/wheels"
    (cd "$ROOT" && tar -cf - -T "$SOURCES") | tar -C "$WORK/src" -xf -
    DEPS=$CACHE/wheels-$DEPS_KEY
    if [ ! -d "$DEPS" ]; then
        step "vpnrouter: wheels of its dependencies (pip wheel, from PyPI)"
        rm -rf "$CACHE"/wheels-* "$DEPS.tmp"
        "$PYENV/bin/pip" wheel -q --disable-pip-version-check --wheel-dir "$DEPS.tmp" "$WORK/src" 2>&1 | quiet_pip
        rm -f "$DEPS.tmp"/vpnrouter-*.whl
        mv "$DEPS.tmp" "$DEPS"
    fi
    step "vpnrouter: wheel of this checkout"
    "$PYENV/bin/pip" wheel -q --disable-pip-version-check --no-deps --wheel-dir "$WORK/wheels" "$WORK/src" 2>&1 | quiet_pip
    rm -rf "$ROOTFS/tmp/wheels"
    mkdir -p "$ROOTFS/tmp/wheels"
    cp "$DEPS"/*.whl "$WORK/wheels"/*.whl "$ROOTFS/tmp/wheels/"
    install -m 755 "$HERE/provision.sh" "$ROOTFS/tmp/provision.sh"
    step "vpnrouter: install into /opt/vpnrouter inside the image (no network)"
    in_root "$ROOTFS" /tmp/provision.sh vpnrouter --wheels /tmp/wheels
    rm -rf "$ROOTFS/tmp/wheels" "$ROOTFS/tmp/provision.sh"
    echo "$APP_KEY" > "$CACHE/app.key"
fi

# --- first boot: fresh machine-id and SSH host keys; nothing from the build left behind -------------------------------

: > "$ROOTFS/etc/machine-id"
rm -f "$ROOTFS/var/lib/dbus/machine-id" "$ROOTFS"/etc/ssh/ssh_host_*
ln -s /etc/machine-id "$ROOTFS/var/lib/dbus/machine-id"
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
       "$ROOTFS"/var/log/journal/* "$ROOTFS"/root/.cache "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
mkdir -p "$ROOTFS/var/lib/apt/lists/partial"

# --- outputs -----------------------------------------------------------------------------------------------------

kernel=$(ls "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$ROOTFS/boot/initrd.img-${kernel##*/vmlinuz-}
[ -f "$initrd" ] || die "no initrd for $kernel"
step "disk: mkfs.ext4 -d ($SIZE, $(du -sh "$ROOTFS" | cut -f1) used), kernel ${kernel##*/vmlinuz-}"
rm -f "$OUT"/*.tmp
truncate -s "$SIZE" "$OUT/root.ext4.tmp"
mkfs.ext4 -q -F -L vpnrouter -d "$ROOTFS" "$OUT/root.ext4.tmp"
step "disk: qcow2 (zstd-compressed)"
qemu-img convert -c -o compression_type=zstd -m 8 -W -O qcow2 "$OUT/root.ext4.tmp" "$OUT/vpnrouter.qcow2.tmp"
rm -f "$OUT/root.ext4.tmp"
cp "$kernel" "$OUT/vmlinuz.tmp"
cp "$initrd" "$OUT/initrd.img.tmp"
for f in vpnrouter.qcow2 vmlinuz initrd.img; do mv "$OUT/$f.tmp" "$OUT/$f"; done

step "box: $OUT/vpnrouter-libvirt.box"
VERSION=1.0.$(date -u +%Y%m%d%H%M%S)
BOX=$WORK/box
mkdir -p "$BOX"
virtual_gb=$(( $(qemu-img info --output=json "$OUT/vpnrouter.qcow2" | "$HOST_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') / 1024**3 ))
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$virtual_gb" > "$BOX/metadata.json"
cp "$HERE/box/Vagrantfile" "$BOX/Vagrantfile"
ln "$OUT/vpnrouter.qcow2" "$BOX/box.img" 2>/dev/null || cp "$OUT/vpnrouter.qcow2" "$BOX/box.img"
cp "$OUT/vmlinuz" "$OUT/initrd.img" "$BOX/"
tar -C "$BOX" -cf "$OUT/vpnrouter-libvirt.box.tmp" metadata.json Vagrantfile box.img vmlinuz initrd.img
mv "$OUT/vpnrouter-libvirt.box.tmp" "$OUT/vpnrouter-libvirt.box"
checksum=$(sha256sum "$OUT/vpnrouter-libvirt.box" | cut -d' ' -f1)
cat > "$OUT/vpnrouter-libvirt.json" <<EOF
{
  "name": "$BOX_NAME",
  "description": "vpnrouter appliance: Debian 12, stock kernel, VPN peers, vpnrouter and its lab",
  "versions": [{"version": "$VERSION", "providers": [{"name": "libvirt",
    "url": "file://$OUT/vpnrouter-libvirt.box", "checksum_type": "sha256", "checksum": "$checksum"}]}]
}
EOF
echo "$IMAGE_KEY" > "$OUT/.key"
step "done: $(cd "$OUT" && du -h vpnrouter.qcow2 vmlinuz initrd.img vpnrouter-libvirt.box | awk '{printf "%s %s  ", $2, $1}')"
step "box $BOX_NAME $VERSION: cd vagrant && vagrant up --provider=libvirt"
