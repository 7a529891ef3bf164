# On removal (not on upgrade, when $1 is 1), stop the services first.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now banshare-server.service banshare-client.service \
        >/dev/null 2>&1 || :
fi
exit 0
