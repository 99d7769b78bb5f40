#!/usr/bin/env bash
# Make a small certificate authority and a server certificate for mosquitto's TLS listener.
#
#   bash make-certs.sh DIR HOSTNAME [EXTRA_NAME...]
#   e.g. sudo bash deploy/mosquitto/make-certs.sh /etc/mosquitto/certs broker.lan 192.168.1.20
#
# Writes DIR/ca.key, ca.crt (give ca.crt to every client: Kestrel's tls.ca_file, Home
# Assistant's broker CA), server.key and server.crt. HOSTNAME and each EXTRA_NAME (a DNS name
# or an IP address) go into the certificate's subjectAltName: clients must connect with one
# of them. localhost and 127.0.0.1 are always added. An existing CA is reused, so running it
# again renews only the server certificate. The certificates satisfy strict X.509 checks
# (Python 3.13's default): CA with keyUsage, server with subjectAltName and serverAuth.
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: $0 DIR HOSTNAME [EXTRA_NAME...]" >&2
    exit 2
fi
DIR="$1"
HOST="$2"
shift 2

SAN="DNS:$HOST"
for name in "$@" localhost 127.0.0.1; do
    if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then
        SAN="$SAN,IP:$name"
    else
        SAN="$SAN,DNS:$name"
    fi
done

mkdir -p "$DIR"
cd "$DIR"
umask 077

if [ ! -f ca.key ] || [ ! -f ca.crt ]; then
    openssl req -x509 -new -nodes -newkey rsa:3072 -sha256 -days 3650 \
        -keyout ca.key -out ca.crt -subj "/CN=Kestrel MQTT CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
fi

openssl req -new -nodes -newkey rsa:2048 -sha256 \
    -keyout server.key -out server.csr -subj "/CN=$HOST"
cat >server.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$SAN
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
EXT
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 825 -sha256 -extfile server.ext -out server.crt
rm -f server.csr server.ext

chmod 0644 ca.crt server.crt
chmod 0600 ca.key
# mosquitto (user "mosquitto" on Debian) must read its key.
chmod 0640 server.key
if getent group mosquitto >/dev/null && [ "$(id -u)" -eq 0 ]; then
    chgrp mosquitto server.key
fi
echo "make-certs: $DIR/server.crt for $SAN, signed by $DIR/ca.crt"
