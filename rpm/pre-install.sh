# Creates the banshare system user and group before the files are unpacked, so that they
# can belong to it.
getent group banshare >/dev/null || groupadd --system banshare
getent passwd banshare >/dev/null || \
    useradd --system --gid banshare --home-dir /var/lib/banshare --no-create-home \
        --shell /sbin/nologin --comment "banshare server" banshare
exit 0
