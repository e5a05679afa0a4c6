output "endpoint" {
  description = "The load balancer's DNS name: point the certificate's name at it (CNAME/alias). HTTP API on 443, gRPC on 17912, OTLP on 4317/4318, line protocol on 8086, all TLS."
  value       = aws_lb.liaison.dns_name
}

output "bucket" {
  description = "The data bucket (parts, catalogs)."
  value       = aws_s3_bucket.data.id
}

output "etcd_endpoints" {
  description = "etcd's client URLs (inside the VPC)."
  value       = [for ip in local.etcd_ips : "http://${ip}:2379"]
}

output "query_function" {
  description = "The query function's name."
  value       = aws_lambda_function.query.function_name
}

output "auto_scaling_groups" {
  description = "Auto-scaling group of each role."
  value       = { for role, g in aws_autoscaling_group.node : role => g.name }
}
