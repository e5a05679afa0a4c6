# The bucket is the database: parts and catalog versions, immutable objects
# written create-if-absent. Versioning keeps a deleted or overwritten object
# for `noncurrent_version_days` (the backup against mistakes); encryption
# uses this deployment's KMS key with a bucket key (few KMS requests).
# Key layout (docs/architecture.md): parts/, catalog/, _canopy/probe/ (start-up
# probes), and _deploy/ (the binary the nodes boot, uploaded by this module).

resource "aws_s3_bucket" "data" {
  bucket_prefix = "${var.name}-data-"
  force_destroy = var.force_destroy_bucket
  #checkov:skip=CKV_AWS_18:Server access logs need a second bucket and are site policy; CloudTrail data events record the same per principal.
  #checkov:skip=CKV_AWS_144:Versioning is the backup here; cross-region replication doubles the storage bill and is a site decision (docs/operations.md, Backups).
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events: Canopy learns of new parts from catalog versions, not notifications.
}

resource "aws_s3_bucket_ownership_controls" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
    bucket_key_enabled = true
  }
}

# Canopy's writers would add the multipart rule themselves; here Terraform owns
# the lifecycle configuration, so roles run with CANOPY_S3_ABORT_MULTIPART_DAYS=0.
resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket     = aws_s3_bucket.data.id
  depends_on = [aws_s3_bucket_versioning.data]

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_multipart_days
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    expiration {
      expired_object_delete_marker = true
    }
  }
}

# TLS only.
resource "aws_s3_bucket_policy" "data" {
  bucket     = aws_s3_bucket.data.id
  policy     = data.aws_iam_policy_document.data_bucket.json
  depends_on = [aws_s3_bucket_public_access_block.data]
}

data "aws_iam_policy_document" "data_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.data.arn, "${aws_s3_bucket.data.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# The binary every node boots, keyed by its hash so a new build rolls the
# auto-scaling groups (the launch templates' user data changes).
resource "aws_s3_object" "canopy_binary" {
  bucket = aws_s3_bucket.data.id
  key    = "_deploy/${filesha256(var.canopy_binary)}/canopy"
  source = var.canopy_binary
  # The bucket's default encryption (the KMS key) applies.
  depends_on = [aws_s3_bucket_server_side_encryption_configuration.data]
}

resource "aws_kms_key" "this" {
  description             = "Canopy ${var.name}: the data bucket, the function's environment, log groups"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:A key policy's "*" resource means this key only; the account root statement is AWS's default key policy.
  #checkov:skip=CKV_AWS_356:A key policy's "*" resource means this key only.
  #checkov:skip=CKV_AWS_109:The account root administers its own key (AWS's default key policy), so IAM policies can delegate.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }
}
