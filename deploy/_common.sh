# Shared by aws-once.sh and gcp-once.sh: argument checks that run before any cloud call.

die() { echo "error: $*" >&2; exit 2; }

# BIOHASH_SSH_CIDR: the one address range allowed to SSH into the cluster. No default:
# an unset, malformed or whole-internet value stops the script before it changes anything.
check_ssh_cidr() {
  [ -n "${BIOHASH_SSH_CIDR:-}" ] || die "BIOHASH_SSH_CIDR is not set; set it to the range" \
    "allowed to SSH into the cluster, e.g. BIOHASH_SSH_CIDR=\$(curl -s https://checkip.amazonaws.com)/32"
  python3 - "$BIOHASH_SSH_CIDR" <<'PY' || exit 2
import ipaddress, sys
value = sys.argv[1]
try:
    net = ipaddress.ip_network(value, strict=True)
except ValueError as exc:
    sys.exit(f"error: BIOHASH_SSH_CIDR={value!r} is not a CIDR range ({exc}); e.g. 203.0.113.7/32")
if net.prefixlen == 0:
    sys.exit(f"error: BIOHASH_SSH_CIDR={value!r} admits the whole internet; give your own range")
PY
}

# A bucket name without scheme or path: my-biohash-bucket.
check_bucket() {
  [[ "${1:-}" =~ ^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$ ]] \
    || die "bucket name ${1:-<missing>} is not a plain bucket name (e.g. my-biohash-bucket, no s3:// or gs://)"
}

# deploy/<cloud>/<file> with CHANGE-ME-biohash-bucket replaced, in a temp file; prints its path.
render() {
  local out
  out=$(mktemp)
  sed "s|CHANGE-ME-biohash-bucket|$2|g" "$1" > "$out"
  echo "$out"
}
