variable "name" {
  description = "Name of this deployment; prefixes every resource (lower case, digits and dashes)."
  type        = string
  default     = "canopy"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name: 2-21 characters, lower case letters, digits and dashes, starting with a letter."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# --- Network -----------------------------------------------------------------

variable "zones" {
  description = "The three availability zones, as suffixes of the region (us-east-1 + a = us-east-1a)."
  type        = list(string)
  default     = ["a", "b", "c"]

  validation {
    condition     = length(var.zones) == 3
    error_message = "zones: exactly three."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC (three public /24 and three private /20 subnets are cut from it)."
  type        = string
  default     = "10.42.0.0/16"
}

variable "nat_gateways" {
  description = "NAT gateways: 1 (cheaper; egress stops if its zone fails) or 3 (one per zone)."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 3], var.nat_gateways)
    error_message = "nat_gateways: 1 or 3."
  }
}

variable "allowed_cidrs" {
  description = "Who may reach the load balancer (agents, dashboards). Default: the VPC only."
  type        = list(string)
  default     = []
}

variable "public_endpoint" {
  description = "Put the load balancer in the public subnets with a public address (else internal)."
  type        = bool
  default     = false
}

variable "certificate_arn" {
  description = "ACM certificate for the load balancer's TLS listeners (the name agents connect to)."
  type        = string
}

variable "lb_access_logs_bucket" {
  description = "An S3 bucket (SSE-S3, with the ELB log delivery policy) for the load balancer's TLS access logs; empty: none."
  type        = string
  default     = ""
}

variable "deletion_protection" {
  description = "Protect the load balancer from deletion (set false before `terraform destroy`)."
  type        = bool
  default     = true
}

# --- Artifacts -----------------------------------------------------------------

variable "canopy_binary" {
  description = "Path of the `canopy` binary for x86_64 Linux, glibc <= 2.34 (see README.md: built in the Dockerfile's image, stripped)."
  type        = string
  default     = "../../target/release/canopy"
}

variable "lambda_zip" {
  description = "Path of the query function's package (`cargo lambda build --release -p canopy-lambda --x86-64 --output-format zip`)."
  type        = string
  default     = "../../target/lambda/canopy-lambda/bootstrap.zip"
}

variable "ami_id" {
  description = "AMI of the Canopy nodes (Amazon Linux 2023, x86_64); empty: the newest, which rolls the groups when AWS publishes one."
  type        = string
  default     = ""
}

# --- Sizes ---------------------------------------------------------------------

variable "ingester_count" {
  description = "Ingesters (each owns a share of the shards; give groups shard_num >= 2-4 x this)."
  type        = number
  default     = 3
}

variable "ingester_instance_type" {
  description = "Ingester instance type; needs local NVMe instance store (the WAL): the *d families (m6id, c6id, i4i, ...)."
  type        = string
  default     = "m6id.large"
}

variable "ingester_memory_budget_bytes" {
  description = "Memory an ingester gives ingest (queued writes, memtables, in-flight flushes); past half of it the largest memtables flush, past all of it writes get 429 (~40% of the instance's memory)."
  type        = number
  default     = 3221225472
}

variable "ingester_drain_seconds" {
  description = "How long a terminating ingester may take to hand its shards over (flushing each) before the instance goes."
  type        = number
  default     = 900
}

variable "querier_count" {
  description = "Queriers (each caches the time segments that rendezvous hashing gives it)."
  type        = number
  default     = 2
}

variable "querier_instance_type" {
  description = "Querier instance type; local NVMe instance store holds the part cache's disk tier."
  type        = string
  default     = "c6id.large"
}

variable "querier_cache_memory_bytes" {
  description = "Memory tier of a querier's part cache."
  type        = number
  default     = 1610612736
}

variable "querier_cache_disk_bytes" {
  description = "Disk tier of a querier's part cache (on the instance store)."
  type        = number
  default     = 85899345920
}

variable "liaison_count" {
  description = "Liaisons behind the load balancer."
  type        = number
  default     = 2
}

variable "liaison_instance_type" {
  description = "Liaison instance type."
  type        = string
  default     = "c6i.large"
}

variable "liaison_auth_tokens" {
  description = "Client tokens the liaisons accept: lines of `ROLE SHA256HEX` (role read, write or admin; the hex SHA-256 of the token, so no secret), as --auth-tokens-file reads them. Empty: no authentication (the liaisons warn). Changing it rolls the liaisons."
  type        = string
  default     = ""
  validation {
    condition     = alltrue([for l in split("\n", var.liaison_auth_tokens) : can(regex("^\\s*(#.*)?$|^\\s*(read|write|admin)\\s+[0-9a-fA-F]{64}\\s*$", l))])
    error_message = "Each line is `read|write|admin SHA256HEX` (64 hex digits), a comment or empty."
  }
}

variable "liaison_admin_compaction" {
  description = "Let liaisons run POST /api/v1/admin/compact (grants them the compactor's delete rights)."
  type        = bool
  default     = false
}

variable "compactor_instance_type" {
  description = "Compactor instance type (one instance, replaced by its auto-scaling group when lost)."
  type        = string
  default     = "c6i.large"
}

variable "etcd_instance_type" {
  description = "Instance type of the three etcd nodes."
  type        = string
  default     = "t3.small"
}

variable "etcd_volume_gb" {
  description = "Size of each etcd node's encrypted gp3 root volume (etcd's data lives on it)."
  type        = number
  default     = 20
}

# --- The query function ----------------------------------------------------------

variable "lambda_when" {
  description = "When liaisons send query fragments to the function: never, always, or over:BYTES (a shard's estimated bytes)."
  type        = string
  default     = "over:1073741824"

  validation {
    condition     = can(regex("^(never|always|over:[0-9]+)$", var.lambda_when))
    error_message = "lambda_when: never, always or over:BYTES."
  }
}

variable "lambda_memory_mb" {
  description = "Memory of the query function (CPU grows with it; 1769 MB is one full vCPU)."
  type        = number
  default     = 1769
}

variable "lambda_reserved_concurrency" {
  description = "Reserved concurrency of the query function; liaisons share it (each gets reserved / liaison_count)."
  type        = number
  default     = 50
}

variable "lambda_timeout_seconds" {
  description = "Function timeout; liaisons give an invocation half the query deadline (60 s), then run it on a querier."
  type        = number
  default     = 30
}

variable "log_retention_days" {
  description = "Retention of the function's and the VPC flow logs' CloudWatch log groups."
  type        = number
  default     = 365
}

variable "noncurrent_version_days" {
  description = "Days a deleted or overwritten object stays recoverable (bucket versioning is the backup)."
  type        = number
  default     = 7
}

variable "force_destroy_bucket" {
  description = "Let `terraform destroy` delete the bucket with every part, catalog and old version in it."
  type        = bool
  default     = false
}

variable "abort_multipart_days" {
  description = "Days after which incomplete multipart uploads are aborted."
  type        = number
  default     = 7
}

variable "lambda_ephemeral_mb" {
  description = "The function's /tmp (MB); the part cache's disk tier takes all but 512 MB of it."
  type        = number
  default     = 2048
}
