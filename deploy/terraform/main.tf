locals {
  name              = "resellio-${var.environment}"
  data_services     = ["auth", "catalog", "ordering", "resale"]
  mail_services     = ["auth", "ordering", "resale"]
  all_processes     = ["auth", "catalog", "ordering", "resale", "gateway"]
  container_port    = 8080
  service_connect   = { for s in local.all_processes : s => "${s}.${local.name}.internal" }
  account_id        = data.aws_caller_identity.current.account_id
  partition         = data.aws_partition.current.partition
}

data "aws_caller_identity" "current" {}
# The load balancer's subnets: its nodes, the only proxies whose X-Forwarded-For is believed.
data "aws_subnet" "public" {
  for_each = toset(var.public_subnet_ids)
  id       = each.value
}
data "aws_partition" "current" {}

# One customer-managed key for everything at rest: secrets, logs, Aurora, Amazon MQ.
resource "aws_kms_key" "main" {
  description         = "${local.name}: secrets, logs, database and broker at rest"
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncrypt"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = { "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*" }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "main" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.main.key_id
}
