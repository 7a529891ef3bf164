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
# The fail2ban jail (/etc/fail2ban/jail.d/banshare.conf) takes effect when fail2ban reads
# its configuration again. A fail2ban that runs already, even one that the same apt or dnf
# run installed and started before this package's files were in place, reloads now: a
# reload keeps its bans, where a restart would lift them for a moment.
if [ -d /run/systemd/system ] && systemctl is-active --quiet fail2ban.service; then
    tries=0
    until fail2ban-client ping >/dev/null 2>&1 || [ "$tries" -ge 30 ]; do
        sleep 1
        tries=$((tries + 1))
    done
    fail2ban-client reload >/dev/null 2>&1 || :
fi
exit 0
