# Creates the directories and this host's key pair if it has none, the way ssh host keys
# are made, and tells systemd about the units (installed, not enabled).
install -d -m 0750 -o root -g banshare /etc/banshare/keys /etc/banshare/authorized-keys
install -d -m 0750 -o banshare -g banshare /var/lib/banshare
# The client's own, root's only: it runs as root.
install -d -m 0750 -o root -g root /var/lib/banshare-client /var/spool/banshare
if [ ! -e /etc/banshare/keys/host.key_secret ]; then
    /usr/bin/banshare keygen --dir /etc/banshare/keys --name host >/dev/null
    touch /var/lib/banshare-client/.host-key-made-by-package
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
