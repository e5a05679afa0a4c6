# Nodes talk to each other on Canopy's two ports and etcd's; only the load
# balancer reaches liaisons from outside; egress is HTTPS (S3, KMS, Lambda,
# SSM, packages) plus the cluster itself.

locals {
  cluster_ports = { grpc = 17912, http = 17913, etcd_client = 2379, etcd_peer = 2380 }
}

resource "aws_security_group" "cluster" {
  name        = "${var.name}-cluster"
  description = "Canopy nodes and etcd: internal gRPC/HTTP and etcd between members"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "cluster" {
  for_each                     = local.cluster_ports
  security_group_id            = aws_security_group.cluster.id
  referenced_security_group_id = aws_security_group.cluster.id
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  description                  = "cluster-internal ${each.key}"
}

resource "aws_vpc_security_group_egress_rule" "cluster" {
  for_each                     = local.cluster_ports
  security_group_id            = aws_security_group.cluster.id
  referenced_security_group_id = aws_security_group.cluster.id
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  description                  = "cluster-internal ${each.key}"
}

resource "aws_vpc_security_group_egress_rule" "cluster_https" {
  security_group_id = aws_security_group.cluster.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "HTTPS: S3, KMS, Lambda, SSM, package repositories"
}

resource "aws_vpc_security_group_egress_rule" "cluster_http" {
  security_group_id = aws_security_group.cluster.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  description       = "HTTP: Debian's package mirror (apt verifies signatures)"
}

resource "aws_security_group" "lb" {
  name        = "${var.name}-lb"
  description = "The liaisons' network load balancer"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "lb" {
  for_each = {
    for pair in setproduct(keys(local.listeners), local.allowed_cidrs) : "${pair[0]}-${pair[1]}" => {
      port = local.listeners[pair[0]].port
      cidr = pair[1]
    }
  }
  security_group_id = aws_security_group.lb.id
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  description       = "clients: ${each.key}"
}

resource "aws_vpc_security_group_egress_rule" "lb" {
  for_each                     = local.listeners
  security_group_id            = aws_security_group.lb.id
  referenced_security_group_id = aws_security_group.liaison.id
  ip_protocol                  = "tcp"
  from_port                    = each.value.target_port
  to_port                      = each.value.target_port
  description                  = "to liaisons: ${each.key}"
}

resource "aws_security_group" "liaison" {
  #checkov:skip=CKV2_AWS_5:Attached through the liaison launch template's network interface (nodes.tf, extra_sgs), which the check does not follow.
  name        = "${var.name}-liaison"
  description = "Liaisons: reached from the load balancer"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "liaison" {
  for_each                     = local.listeners
  security_group_id            = aws_security_group.liaison.id
  referenced_security_group_id = aws_security_group.lb.id
  ip_protocol                  = "tcp"
  from_port                    = each.value.target_port
  to_port                      = each.value.target_port
  description                  = "from the load balancer: ${each.key}"
}

resource "aws_security_group" "lambda" {
  name        = "${var.name}-query-function"
  description = "The query function: HTTPS out only (S3, KMS)"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_egress_rule" "lambda_https" {
  security_group_id = aws_security_group.lambda.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "HTTPS: S3, KMS"
}
