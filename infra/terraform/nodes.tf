# Canopy's roles on EC2 (Amazon Linux 2023): one launch template and one
# auto-scaling group per role, all in the private subnets. The commands and
# environment come from templates/roles.json.tftpl — the same file
# tests/terraform.rs starts a cluster from, so a renamed flag fails a test.

data "aws_ssm_parameter" "al2023" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

locals {
  # In a reservation of their own (network.tf), so nothing else takes them.
  etcd_ips             = [for i in range(3) : cidrhost(local.private_subnets[i], 20)]
  lambda_function_name = "${var.name}-query"

  roles = jsondecode(templatefile("${path.module}/templates/roles.json.tftpl", {
    etcd_endpoints                 = join(",", [for ip in local.etcd_ips : "http://${ip}:2379"])
    bucket                         = aws_s3_bucket.data.id
    region                         = var.region
    ingester_memory_budget_bytes   = var.ingester_memory_budget_bytes
    querier_cache_memory_bytes     = var.querier_cache_memory_bytes
    querier_cache_disk_bytes       = var.querier_cache_disk_bytes
    lambda_when                    = var.lambda_when
    lambda_function                = local.lambda_function_name
    lambda_concurrency_per_liaison = max(1, floor(var.lambda_reserved_concurrency / var.liaison_count))
    lambda_cache_memory_bytes      = floor(var.lambda_memory_mb * 1048576 / 4)
    lambda_cache_disk_bytes        = (var.lambda_ephemeral_mb - 512) * 1048576
    cluster_secret_file            = local.cluster_secret_file
  }))

  groups = {
    ingester = {
      count         = var.ingester_count
      instance_type = var.ingester_instance_type
      local_disk    = true
      stop_timeout  = var.ingester_drain_seconds - 60
      hook          = "${var.name}-ingester-handover"
      extra_sgs     = []
      health_check  = "EC2"
    }
    querier = {
      count         = var.querier_count
      instance_type = var.querier_instance_type
      local_disk    = true
      stop_timeout  = 90
      hook          = ""
      extra_sgs     = []
      health_check  = "EC2"
    }
    compactor = {
      count         = 1
      instance_type = var.compactor_instance_type
      local_disk    = false
      stop_timeout  = 300
      hook          = ""
      extra_sgs     = []
      health_check  = "EC2"
    }
    liaison = {
      count         = var.liaison_count
      instance_type = var.liaison_instance_type
      local_disk    = false
      stop_timeout  = 90
      hook          = ""
      extra_sgs     = [aws_security_group.liaison.id]
      health_check  = "ELB"
    }
  }
}

resource "aws_launch_template" "node" {
  for_each      = local.groups
  name_prefix   = "${var.name}-${each.key}-"
  image_id      = var.ami_id != "" ? var.ami_id : data.aws_ssm_parameter.al2023.insecure_value
  instance_type = each.value.instance_type
  ebs_optimized = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.node[each.key].arn
  }

  network_interfaces {
    associate_public_ip_address = false
    security_groups             = concat([aws_security_group.cluster.id], each.value.extra_sgs)
  }

  metadata_options {
    http_tokens                 = "required"
    http_endpoint               = "enabled"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = 30
      volume_type = "gp3"
      # The AWS-managed EBS key: Auto Scaling's service-linked role may use it,
      # where this deployment's key would need a grant in its policy first.
      encrypted             = true
      delete_on_termination = true
    }
  }

  user_data = base64encode(templatefile("${path.module}/templates/canopy-node.sh.tftpl", {
    role                     = each.key
    args                     = join(" ", local.roles[each.key].args)
    env                      = merge(local.roles[each.key].env, local.extra_env[each.key])
    cluster_secret_parameter = aws_ssm_parameter.cluster_secret.name
    cluster_secret_file      = local.cluster_secret_file
    auth_tokens              = each.key == "liaison" ? var.liaison_auth_tokens : ""
    auth_tokens_file         = local.auth_tokens_file
    bucket                   = aws_s3_bucket.data.id
    binary_key               = aws_s3_object.canopy_binary.key
    region                   = var.region
    needs_local_disk         = each.value.local_disk
    stop_timeout_seconds     = each.value.stop_timeout
    lifecycle_hook           = each.value.hook
    asg_name                 = "${var.name}-${each.key}"
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${var.name}-${each.key}", "canopy:role" = each.key }
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_autoscaling_group" "node" {
  for_each                  = local.groups
  name                      = "${var.name}-${each.key}"
  min_size                  = each.value.count
  max_size                  = each.value.count + 1
  desired_capacity          = each.value.count
  vpc_zone_identifier       = aws_subnet.private[*].id
  health_check_type         = each.value.health_check
  health_check_grace_period = 120
  target_group_arns         = each.key == "liaison" ? [for tg in aws_lb_target_group.liaison : tg.arn] : []

  launch_template {
    id      = aws_launch_template.node[each.key].id
    version = aws_launch_template.node[each.key].latest_version
  }

  # A new binary or setting rolls one instance at a time, starting the
  # replacement before stopping the old one (which, for an ingester, hands its
  # shards over through the termination hook below).
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 110
      instance_warmup        = 120
    }
  }

  dynamic "initial_lifecycle_hook" {
    for_each = each.value.hook == "" ? [] : [each.value.hook]
    content {
      name                 = initial_lifecycle_hook.value
      lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
      heartbeat_timeout    = var.ingester_drain_seconds
      default_result       = "CONTINUE"
    }
  }

  # Instances boot fetching the binary (S3 endpoint, NAT) with their policies in place.
  depends_on = [aws_route_table_association.private, aws_vpc_endpoint.s3, aws_nat_gateway.this, aws_iam_role_policy.node]

  dynamic "tag" {
    for_each = merge({ "canopy:deployment" = var.name, "canopy:role" = each.key }, var.tags)
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
