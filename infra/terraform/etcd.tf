# Three etcd members (Debian 12's etcd-server, the release Canopy's tests run
# against), one per zone at fixed addresses so the member list is static.
# Data sits on each instance's encrypted root volume; a replaced member must
# be re-added (`etcdctl member remove/add`, see README.md).

data "aws_ami" "debian12" {
  most_recent = true
  owners      = ["136693071363"] # Debian's official AWS account
  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

locals {
  etcd_names   = [for i in range(3) : "etcd-${i}"]
  etcd_cluster = join(",", [for i in range(3) : "${local.etcd_names[i]}=http://${local.etcd_ips[i]}:2380"])
}

resource "aws_instance" "etcd" {
  count                  = 3
  ami                    = data.aws_ami.debian12.id
  instance_type          = var.etcd_instance_type
  subnet_id              = aws_subnet.private[count.index].id
  private_ip             = local.etcd_ips[count.index]
  vpc_security_group_ids = [aws_security_group.cluster.id]
  iam_instance_profile   = aws_iam_instance_profile.node["etcd"].name
  ebs_optimized          = true
  monitoring             = true

  metadata_options {
    http_tokens   = "required"
    http_endpoint = "enabled"
  }

  root_block_device {
    volume_size = var.etcd_volume_gb
    volume_type = "gp3"
    encrypted   = true
    kms_key_id  = aws_kms_key.this.arn
  }

  user_data = templatefile("${path.module}/templates/etcd-node.sh.tftpl", {
    name    = local.etcd_names[count.index]
    ip      = local.etcd_ips[count.index]
    cluster = local.etcd_cluster
    token   = "${var.name}-etcd"
    region  = var.region
  })
  user_data_replace_on_change = false

  tags = { Name = "${var.name}-${local.etcd_names[count.index]}", "canopy:role" = "etcd" }

  # apt needs the NAT; the address needs its reservation.
  depends_on = [aws_route_table_association.private, aws_nat_gateway.this, aws_ec2_subnet_cidr_reservation.etcd]

  lifecycle {
    # A new Debian image must not replace a member (and its data) by surprise.
    ignore_changes = [ami, user_data]
  }
}
