#!/usr/bin/env bash
# One-time GCP setup for cluster-gcp.yaml (safe to re-run):
#   BIOHASH_SSH_CIDR=203.0.113.7/32 deploy/gcp-once.sh my-project my-biohash-bucket [network]
#
# 1. the worker service account biohash-ray-worker, with roles/storage.objectAdmin on the
#    bucket's sweeps/ and roles/storage.objectViewer on data/ (IAM conditions in deploy/gcp/;
#    they need uniform bucket-level access, switched on here), and no project role;
# 2. firewall rules for the network tag biohash-ray: SSH from $BIOHASH_SSH_CIDR, all traffic
#    between biohash-ray nodes. Refuses while the network's default-allow-ssh admits the
#    whole internet (it would apply to the cluster's nodes too).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/_common.sh"
check_ssh_cidr
[[ "${1:-}" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "project id ${1:-<missing>} is not a GCP project id"
check_bucket "${2:-}"
project=$1 bucket=$2 network=${3:-default}
command -v gcloud >/dev/null || die "the gcloud CLI is not installed"

open=$(gcloud compute firewall-rules list --project "$project" \
       --filter="network~/$network\$ AND sourceRanges=0.0.0.0/0 AND allowed[].ports:22" \
       --format='value(name)')
[ -z "$open" ] || die "firewall rule(s) $open admit SSH from the whole internet on network" \
  "$network; restrict them (gcloud compute firewall-rules update NAME --source-ranges=$BIOHASH_SSH_CIDR)" \
  "or delete them, then run this again"

sa=biohash-ray-worker@$project.iam.gserviceaccount.com
gcloud iam service-accounts describe "$sa" --project "$project" >/dev/null 2>&1 ||
  gcloud iam service-accounts create biohash-ray-worker --project "$project" \
    --display-name "biohash Ray GPU workers (bucket sweeps/ and data/ only)"
gcloud storage buckets update "gs://$bucket" --uniform-bucket-level-access
sweeps=$(render "$here/gcp/worker-sweeps-condition.json" "$bucket")
data=$(render "$here/gcp/worker-data-condition.json" "$bucket")
trap 'rm -f "$sweeps" "$data"' EXIT
gcloud storage buckets add-iam-policy-binding "gs://$bucket" --member "serviceAccount:$sa" \
  --role roles/storage.objectAdmin --condition-from-file "$sweeps" >/dev/null
gcloud storage buckets add-iam-policy-binding "gs://$bucket" --member "serviceAccount:$sa" \
  --role roles/storage.objectViewer --condition-from-file "$data" >/dev/null

rule() { gcloud compute firewall-rules describe "$1" --project "$project" >/dev/null 2>&1 ||
         gcloud compute firewall-rules create "$@" --project "$project" --network "$network" \
           --target-tags biohash-ray >/dev/null; }
rule biohash-ray-ssh --allow tcp:22 --source-ranges "$BIOHASH_SSH_CIDR"
rule biohash-ray-internal --allow all --source-tags biohash-ray
echo "ok: worker account $sa, firewall biohash-ray-ssh + biohash-ray-internal on $network"
