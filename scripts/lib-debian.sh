# Sourced by scripts/podman5.sh and scripts/debroot.sh.

# debian_mirror: the Debian mirror apt already uses on this machine
# (deb822 sources first, then sources.list), else deb.debian.org.
debian_mirror() {
    local m
    m="$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)"
    [ -n "$m" ] || m="$(grep -hoE '^deb +[^ ]+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1)"
    echo "${m:-http://deb.debian.org/debian}"
}
