#!/bin/sh
# Makes fresh TLS and JWT test material in OUTDIR (nothing here is ever committed):
#   ca.pem ca.key                 test CA (EC P-256)
#   server.pem server.key         server cert for localhost, 127.0.0.1 and ::1 (serverAuth)
#   client.pem client.key         client cert from the same CA (clientAuth), for mTLS
#   other-ca.pem other-client.pem other-client.key   a client from an unknown CA
#   jwt-rs256.key/.pub jwt-es256.key/.pub   JWT signing keys (PEM; .pub = PUBLIC KEY)
#   jwt-hs256.secret              64 hex characters used as the HS256 secret bytes
# Usage: gen.sh OUTDIR [DAYS]   (DAYS of validity, default 30)
set -eu
out=${1:?usage: gen.sh OUTDIR [DAYS]}
days=${2:-30}
mkdir -p "$out"
cd "$out"
umask 077

ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # NAME CN
    ec_key "$1.key"
    openssl req -x509 -new -key "$1.key" -out "$1.pem" -days "$days" -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}

leaf() { # NAME CA CN EXTENSIONS
    ec_key "$1.key"
    openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$3"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "$4" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days "$days" \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "corvid test CA"
leaf server ca localhost "extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
leaf client ca corvid-test-client "extendedKeyUsage=clientAuth"
ca other-ca "unknown test CA"
leaf other-client other-ca corvid-stranger "extendedKeyUsage=clientAuth"
rm -f other-ca.key ./*.srl

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out jwt-rs256.key 2>/dev/null
openssl pkey -in jwt-rs256.key -pubout -out jwt-rs256.pub
ec_key jwt-es256.key
openssl pkey -in jwt-es256.key -pubout -out jwt-es256.pub
openssl rand -hex 32 | tr -d '\n' > jwt-hs256.secret
chmod 644 ./*.pem ./*.pub
