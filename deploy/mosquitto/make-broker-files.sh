#!/usr/bin/env bash
# Make what deploy/mosquitto/mosquitto.conf needs: a CA, the broker's certificate,
# and a password file with one random password per device, the dashboard and the
# clip receiver.
#
#   deploy/mosquitto/make-broker-files.sh OUT_DIR BROKER_HOST DEVICE_ID...
#
# OUT_DIR gets ca.crt, ca.key (keep it offline), broker.crt, broker.key, passwd, acl (the
# service accounts from ./acl, then one block per device from ./acl-device),
# mosquitto.conf, and secrets/<user>.password (install each on its device as
# upload.mqtt.password_file and mqtt.password_file, mode 0600; never in git).
# DEVICE_ID is what `edge identity show` prints on that device. Re-running keeps the
# CA and adds or re-keys the users named.
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 OUT_DIR BROKER_HOST DEVICE_ID..." >&2
    exit 2
fi
out=$1 host=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
for id in "$@"; do
    if ! [[ $id =~ ^[A-Za-z0-9_-]{1,64}$ ]]; then
        echo "device id '$id' is not valid: use the id \`edge identity show\` prints" >&2
        exit 2
    fi
    if [ "$id" = dashboard ] || [ "$id" = receiver ]; then
        echo "device id '$id' is reserved for a service user" >&2
        exit 2
    fi
done

umask 077
mkdir -p "$out/secrets"
cd "$out"

if [ ! -f ca.key ]; then
    openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=edge-recorder broker CA" \
        -keyout ca.key -out ca.crt 2>/dev/null
fi
if [[ $host =~ ^[0-9.]+$ ]] || [[ $host == *:* ]]; then san="IP:$host"; else san="DNS:$host"; fi
openssl req -newkey rsa:3072 -nodes -subj "/CN=$host" -keyout broker.key -out broker.csr \
    2>/dev/null
openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile <(printf "subjectAltName=%s\nextendedKeyUsage=serverAuth\n" "$san") \
    -out broker.crt 2>/dev/null
rm -f broker.csr

touch passwd
for user in "$@" dashboard receiver; do
    pw=$(openssl rand -base64 24)
    printf '%s\n' "$pw" > "secrets/$user.password"
    mosquitto_passwd -b passwd "$user" "$pw"
done
cp "$here/mosquitto.conf" .
# The ACL: the service accounts, then one block per device in the password file (this run's
# and earlier ones'), each granting that device its own topics only (see acl-device).
{
    cat "$here/acl"
    cut -d: -f1 passwd | while read -r user; do
        if [ "$user" != dashboard ] && [ "$user" != receiver ] \
                && [[ $user =~ ^[A-Za-z0-9_-]{1,64}$ ]]; then
            sed "s/DEVICE_ID/$user/g" "$here/acl-device"
        fi
    done
} > acl.new
mv acl.new acl
chmod 0644 ca.crt broker.crt acl mosquitto.conf
chmod 0600 ca.key broker.key passwd secrets/*
echo "made $out: CA, broker certificate for $host, passwords for $* dashboard receiver"
