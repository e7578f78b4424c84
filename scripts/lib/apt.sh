# Sourced by the scripts/bootstrap.d steps that install Debian packages; they define
# log and fail first. `apt_root WHAT` finds root or sudo (the array `sudo` is the prefix
# for privileged commands); `apt_install [APT-OPTION...] PACKAGE...` installs with apt-get.

# Needs root: as root nothing, otherwise sudo, or fail naming WHAT needs it.
apt_root() {
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || fail "$1 needs root; run as root or install sudo"
        sudo=(sudo)
    fi
}

# Another apt-get on the machine holds dpkg's lock for a while: wait for it (Lock::Timeout).
# A clean machine may have no package lists yet, or stale ones: apt-get update, only when
# the first install fails, then one more try.
apt_install() {
    local apt_log
    apt_log="$(mktemp)"
    if ! _apt_get_install "$apt_log" "$@"; then
        log "apt-get install failed; running apt-get update and trying again"
        "${sudo[@]}" apt-get update -q -o DPkg::Lock::Timeout=600 >>"$apt_log" 2>&1 ||
            { tail -n 20 "$apt_log" >&2; fail "apt-get update failed (full log: $apt_log)"; }
        _apt_get_install "$apt_log" "$@" ||
            { tail -n 20 "$apt_log" >&2; fail "apt-get install $* failed (full log: $apt_log)"; }
    fi
    rm -f "$apt_log"
}

_apt_get_install() {
    local apt_log="$1"
    shift
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o DPkg::Lock::Timeout=600 "$@" >"$apt_log" 2>&1
}
