# What nodes authenticate with (docs/operations.md, "Security"): the cluster
# secret every internal call carries — made once, kept in Parameter Store
# under the deployment's key, read by each node at boot into a file only
# Canopy may read — and the liaisons' client tokens (hashes, no secret).

resource "random_password" "cluster_secret" {
  length  = 48
  special = false
}

resource "aws_ssm_parameter" "cluster_secret" {
  name        = "/${var.name}/cluster-secret"
  description = "Canopy ${var.name}: the secret internal calls carry (--cluster-secret-file)"
  type        = "SecureString"
  key_id      = aws_kms_key.this.arn
  value       = random_password.cluster_secret.result
}

locals {
  cluster_secret_file = "/etc/canopy/cluster-secret"
  auth_tokens_file    = "/etc/canopy/auth-tokens"
  # A liaison requires tokens when some are given (the file written at boot).
  extra_env = {
    ingester  = {}
    querier   = {}
    compactor = {}
    liaison   = var.liaison_auth_tokens == "" ? {} : { CANOPY_AUTH_TOKENS_FILE = local.auth_tokens_file }
  }
}
