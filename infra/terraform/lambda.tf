# The query function: liaisons send it the time segments of large queries
# (`lambda_when`); it reads parts from the bucket through the gateway endpoint
# and answers like a querier. Reserved concurrency caps what it may cost.

resource "aws_cloudwatch_log_group" "lambda" {
  name              = "/aws/lambda/${var.name}-query"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}

resource "aws_lambda_function" "query" {
  #checkov:skip=CKV_AWS_116:Liaisons invoke synchronously and run a failed fragment on a querier; a dead-letter queue applies to asynchronous invocations only.
  #checkov:skip=CKV_AWS_272:The package is built by the operator (cargo lambda build) and pinned by source_code_hash; add a signing profile if your organisation signs artifacts.
  function_name                  = local.lambda_function_name
  role                           = aws_iam_role.lambda.arn
  filename                       = var.lambda_zip
  source_code_hash               = filebase64sha256(var.lambda_zip)
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = ["x86_64"]
  memory_size                    = var.lambda_memory_mb
  timeout                        = var.lambda_timeout_seconds
  reserved_concurrent_executions = var.lambda_reserved_concurrency
  kms_key_arn                    = aws_kms_key.this.arn

  ephemeral_storage {
    size = var.lambda_ephemeral_mb
  }

  environment {
    variables = local.roles.lambda.env
  }

  vpc_config {
    subnet_ids         = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.lambda.id]
  }

  tracing_config {
    mode = "PassThrough"
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.lambda.name
  }

  depends_on = [aws_iam_role_policy.lambda, aws_iam_role_policy_attachment.lambda_vpc]
}
