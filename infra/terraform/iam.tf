# One role per Canopy role, each allowed only what that role does to the
# bucket (key layout in bucket.tf):
#   ingester  reads catalogs; puts parts and catalog versions; its start-up
#             probe creates and deletes a key under _canopy/probe/
#   querier   reads parts and catalogs (so does the query function)
#   compactor reads, writes and deletes parts and catalog versions (merges,
#             retention, garbage collection) and sweeps stray probe keys
#   liaison   reads catalogs (to plan fan-out) and invokes the function; the
#             compactor's rights only with `liaison_admin_compaction`
# Every node may read the binary under _deploy/ and is reachable through
# SSM Session Manager (no SSH, no open port).

locals {
  bucket_arn  = aws_s3_bucket.data.arn
  data_keys   = ["${local.bucket_arn}/parts/*", "${local.bucket_arn}/catalog/*"]
  probe_keys  = ["${local.bucket_arn}/_canopy/probe/*"]
  deploy_keys = ["${local.bucket_arn}/_deploy/*"]
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "read" {
  statement {
    sid       = "ReadData"
    actions   = ["s3:GetObject"]
    resources = local.data_keys
  }
  # Unconditional: S3 answers a GET or HEAD of a missing key (how a catalog
  # learns it is the newest) with 404 only to a principal that may list the
  # bucket, 403 otherwise; and these roles may read every key anyway.
  statement {
    sid       = "ListData"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
  }
  statement {
    sid       = "DecryptData"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }
}

data "aws_iam_policy_document" "ingest" {
  source_policy_documents = [data.aws_iam_policy_document.read.json]
  statement {
    sid       = "PutPartsAndCatalogs"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = local.data_keys
  }
  statement {
    sid       = "StartupProbe"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = local.probe_keys
  }
  statement {
    sid       = "EncryptData"
    actions   = ["kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }
}

data "aws_iam_policy_document" "compact" {
  source_policy_documents = [data.aws_iam_policy_document.read.json]
  statement {
    sid       = "RewriteAndCollect"
    actions   = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = concat(local.data_keys, local.probe_keys)
  }
  statement {
    sid       = "EncryptData"
    actions   = ["kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }
}

data "aws_iam_policy_document" "liaison" {
  source_policy_documents = [var.liaison_admin_compaction ? data.aws_iam_policy_document.compact.json : data.aws_iam_policy_document.read.json]
  statement {
    sid       = "InvokeQueryFunction"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.query.arn]
  }
}

data "aws_iam_policy_document" "boot" {
  statement {
    sid       = "ReadBinary"
    actions   = ["s3:GetObject"]
    resources = local.deploy_keys
  }
  statement {
    sid       = "DecryptBinary"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }
  statement {
    sid       = "ReadClusterSecret"
    actions   = ["ssm:GetParameter"]
    resources = [aws_ssm_parameter.cluster_secret.arn]
  }
}

# What a node may tell its own auto-scaling group: that it is unhealthy (its
# boot failed, or Canopy keeps failing to start; the group replaces it), and,
# for a terminating ingester, that its handover is done.
data "aws_iam_policy_document" "own_group" {
  for_each = local.groups
  statement {
    sid       = "ReportOwnHealth"
    actions   = ["autoscaling:SetInstanceHealth"]
    resources = ["arn:${data.aws_partition.current.partition}:autoscaling:${var.region}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${var.name}-${each.key}"]
  }
  dynamic "statement" {
    for_each = each.value.hook == "" ? [] : [each.key]
    content {
      sid       = "CompleteTerminationHook"
      actions   = ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"]
      resources = ["arn:${data.aws_partition.current.partition}:autoscaling:${var.region}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${var.name}-${statement.value}"]
    }
  }
}

locals {
  node_policies = {
    ingester  = [data.aws_iam_policy_document.ingest.json, data.aws_iam_policy_document.boot.json, data.aws_iam_policy_document.own_group["ingester"].json]
    querier   = [data.aws_iam_policy_document.read.json, data.aws_iam_policy_document.boot.json, data.aws_iam_policy_document.own_group["querier"].json]
    compactor = [data.aws_iam_policy_document.compact.json, data.aws_iam_policy_document.boot.json, data.aws_iam_policy_document.own_group["compactor"].json]
    liaison   = [data.aws_iam_policy_document.liaison.json, data.aws_iam_policy_document.boot.json, data.aws_iam_policy_document.own_group["liaison"].json]
    etcd      = []
  }
}

data "aws_iam_policy_document" "node" {
  for_each                = { for role, docs in local.node_policies : role => docs if length(docs) > 0 }
  source_policy_documents = each.value
}

resource "aws_iam_role" "node" {
  for_each           = local.node_policies
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "node" {
  for_each = data.aws_iam_policy_document.node
  name     = "canopy-${each.key}"
  role     = aws_iam_role.node[each.key].id
  policy   = each.value.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  for_each   = aws_iam_role.node
  role       = each.value.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "node" {
  for_each = aws_iam_role.node
  name     = each.value.name
  role     = each.value.name
}

# The query function: reads only, plus its own log group.
data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "lambda" {
  source_policy_documents = [data.aws_iam_policy_document.read.json]
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda.arn}:*"]
  }
}

resource "aws_iam_role" "lambda" {
  name               = "${var.name}-query-function"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

resource "aws_iam_role_policy" "lambda" {
  name   = "canopy-query-function"
  role   = aws_iam_role.lambda.id
  policy = data.aws_iam_policy_document.lambda.json
}

# The function runs in the private subnets (S3 through the gateway endpoint).
resource "aws_iam_role_policy_attachment" "lambda_vpc" {
  role       = aws_iam_role.lambda.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}
