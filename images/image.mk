# The appliance image and its tests: included from the top Makefile (`include images/image.mk`).
#
#   make image           images/out/: vpnrouter.qcow2, vmlinuz, initrd.img, vpnrouter-libvirt.box (cached rebuilds)
#   make vm-test         boot it under QEMU (TCG), run images/vm-test/guest.sh inside, print what it said
#   make appliance-test  tests/appliance: the VM test and `vagrant up` of the box with libvirt
#   make image-deps      the Debian packages these need on the host (from the mirror apt is configured with)
#   make image-clean     remove images/out (the cache in $(IMAGE_CACHE) stays; image-clean-cache removes it)

IMAGES_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
IMAGE_CACHE ?= /var/cache/vpnrouter-image
export IMAGE_CACHE
IMAGE_DEBS := debootstrap e2fsprogs qemu-system-x86 qemu-utils python3 python3-venv python3-dev gcc rsync \
              vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients dnsmasq-base iptables

.PHONY: image vm-test appliance-test image-deps image-clean image-clean-cache

image: image-deps
	bash $(IMAGES_DIR)/build.sh

vm-test: image
	bash $(IMAGES_DIR)/vm-test.sh

appliance-test: deps image-deps
	$(PY) -m pytest tests/appliance $(PYTEST_ARGS)

# Installed only when one is missing. No recommends: vagrant-libvirt's would bring libguestfs and an NFS server.
image-deps:
	@missing=$$(for p in $(IMAGE_DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

image-clean:
	rm -rf $(IMAGES_DIR)/out

image-clean-cache: image-clean
	rm -rf $(IMAGE_CACHE)
