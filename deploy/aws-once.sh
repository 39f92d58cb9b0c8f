#!/usr/bin/env bash
# One-time AWS setup for cluster.yaml (per account and region; safe to re-run):
#   BIOHASH_SSH_CIDR=203.0.113.7/32 deploy/aws-once.sh my-biohash-bucket [region]
#
# 1. the worker role + instance profile biohash-ray-worker, with deploy/aws/worker-policy.json
#    (the bucket's sweeps/ read/write, data/ read, list; no EC2, no IAM);
# 2. the head's role ray-autoscaler-v1 as Ray would create it on the first `ray up`
#    (AmazonEC2FullAccess + AmazonS3FullAccess: what the autoscaler needs) if missing, plus
#    iam:PassRole for biohash-ray-worker only (deploy/aws/head-pass-worker-role.json);
# 3. the security group biohash-ray in the default VPC: SSH from $BIOHASH_SSH_CIDR, all
#    traffic between its own members, nothing else.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/_common.sh"
check_ssh_cidr
check_bucket "${1:-}"
bucket=$1
region=${2:-${AWS_REGION:-us-west-2}}
command -v aws >/dev/null || die "the aws CLI is not installed (pip install awscli)"

worker=biohash-ray-worker head=ray-autoscaler-v1
policy=$(render "$here/aws/worker-policy.json" "$bucket")
trap 'rm -f "$policy"' EXIT

if ! aws iam get-role --role-name "$worker" >/dev/null 2>&1; then
  aws iam create-role --role-name "$worker" \
    --assume-role-policy-document "file://$here/aws/worker-trust.json" >/dev/null
fi
aws iam put-role-policy --role-name "$worker" --policy-name biohash-bucket \
  --policy-document "file://$policy"
if ! aws iam get-instance-profile --instance-profile-name "$worker" >/dev/null 2>&1; then
  aws iam create-instance-profile --instance-profile-name "$worker" >/dev/null
  aws iam add-role-to-instance-profile --instance-profile-name "$worker" --role-name "$worker"
fi

if ! aws iam get-role --role-name "$head" >/dev/null 2>&1; then
  aws iam create-role --role-name "$head" \
    --assume-role-policy-document "file://$here/aws/worker-trust.json" >/dev/null
  for p in AmazonEC2FullAccess AmazonS3FullAccess; do
    aws iam attach-role-policy --role-name "$head" --policy-arn "arn:aws:iam::aws:policy/$p"
  done
  aws iam create-instance-profile --instance-profile-name "$head" >/dev/null
  aws iam add-role-to-instance-profile --instance-profile-name "$head" --role-name "$head"
fi
aws iam put-role-policy --role-name "$head" --policy-name biohash-pass-worker-role \
  --policy-document "file://$here/aws/head-pass-worker-role.json"

vpc=$(aws ec2 describe-vpcs --region "$region" --filters Name=isDefault,Values=true \
      --query 'Vpcs[0].VpcId' --output text)
[ "$vpc" != None ] || die "no default VPC in $region: create the group biohash-ray in your VPC by hand"
sg=$(aws ec2 describe-security-groups --region "$region" \
     --filters Name=vpc-id,Values="$vpc" Name=group-name,Values=biohash-ray \
     --query 'SecurityGroups[0].GroupId' --output text)
if [ "$sg" = None ]; then
  sg=$(aws ec2 create-security-group --region "$region" --vpc-id "$vpc" --group-name biohash-ray \
       --description "biohash Ray cluster: SSH from one range, all traffic inside the group" \
       --query GroupId --output text)
  aws ec2 authorize-security-group-ingress --region "$region" --group-id "$sg" \
    --ip-permissions "IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{CidrIp=$BIOHASH_SSH_CIDR}]" \
    "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$sg}]" >/dev/null
else
  open=$(aws ec2 describe-security-groups --region "$region" --group-ids "$sg" \
         --query 'SecurityGroups[0].IpPermissions[].IpRanges[?CidrIp==`0.0.0.0/0`][]' --output text)
  [ -z "$open" ] || die "security group biohash-ray ($sg) admits the whole internet; delete it" \
    "(aws ec2 delete-security-group --group-id $sg) and run this again"
fi
echo "ok: worker profile $worker, PassRole on $head, security group biohash-ray ($sg) in $vpc"
