# On removal, remove what the package created: its directories, the host key it generated
# (never keys an admin made), and the banshare user.
if [ "$1" -eq 0 ]; then
    if [ -e /var/lib/banshare-client/.host-key-made-by-package ]; then
        rm -f /etc/banshare/keys/host.key /etc/banshare/keys/host.key_secret
    fi
    rm -rf /var/lib/banshare /var/lib/banshare-client /var/spool/banshare /run/banshare \
        /run/banshare-client
    rmdir --ignore-fail-on-non-empty /etc/banshare/keys /etc/banshare/authorized-keys \
        /etc/banshare 2>/dev/null || :
    getent passwd banshare >/dev/null && userdel banshare >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
