# Liaisons behind a network load balancer that terminates TLS (the ACM
# certificate) on every public port and forwards plain TCP to the liaisons.
# gRPC listeners negotiate HTTP/2 through ALPN.

locals {
  listeners = {
    http      = { port = 443, target_port = 17913, alpn = "None" }
    grpc      = { port = 17912, target_port = 17912, alpn = "HTTP2Preferred" }
    otlp_grpc = { port = 4317, target_port = 4317, alpn = "HTTP2Preferred" }
    otlp_http = { port = 4318, target_port = 4318, alpn = "None" }
    influx    = { port = 8086, target_port = 8086, alpn = "None" }
  }
}

resource "aws_lb" "liaison" {
  name                             = "${var.name}-liaison"
  load_balancer_type               = "network"
  internal                         = !var.public_endpoint
  subnets                          = var.public_endpoint ? aws_subnet.public[*].id : aws_subnet.private[*].id
  security_groups                  = [aws_security_group.lb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection
  #checkov:skip=CKV_AWS_91:Access logs go to the bucket named by lb_access_logs_bucket when set (NLB logs need an SSE-S3 bucket with ELB's delivery policy, which is site policy).

  dynamic "access_logs" {
    for_each = var.lb_access_logs_bucket == "" ? [] : [var.lb_access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }
}

resource "aws_lb_target_group" "liaison" {
  for_each             = local.listeners
  name                 = "${var.name}-${replace(each.key, "_", "-")}"
  port                 = each.value.target_port
  protocol             = "TCP"
  vpc_id               = aws_vpc.this.id
  deregistration_delay = 30

  # Every listener's target is healthy when the liaison's /api/healthz is.
  health_check {
    protocol            = "HTTP"
    port                = "17913"
    path                = "/api/healthz"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "liaison" {
  for_each          = local.listeners
  load_balancer_arn = aws_lb.liaison.arn
  port              = each.value.port
  protocol          = "TLS"
  certificate_arn   = var.certificate_arn
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  alpn_policy       = each.value.alpn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.liaison[each.key].arn
  }
}
