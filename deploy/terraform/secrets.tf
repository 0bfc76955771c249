# Every secret in Secrets Manager; the tasks get them injected by ARN at start, never in plain
# task-definition environment. Database and broker secrets are whole connection URLs, which is
# what the services read (RESELLIO_*_DATABASE_URL, RESELLIO_AMQP_URL).

locals {
  db_host = aws_rds_cluster.main.endpoint
  amqps   = replace(aws_mq_broker.main.instances[0].endpoints[0], "amqps://", "")
  secret_values = merge(
    {
      "db-owner" = "postgresql+asyncpg://${var.db_master_username}:${var.db_master_password}@${local.db_host}:5432/resellio"
      "amqp"     = "amqps://${var.mq_username}:${var.mq_password}@${local.amqps}/"
      "auth" = jsonencode({
        INITIAL_ADMIN_EMAIL    = var.initial_admin_email
        INITIAL_ADMIN_PASSWORD = var.initial_admin_password
        ADMIN_SECRET_KEY       = var.admin_secret_key
        JWT_PRIVATE_KEY        = var.jwt_private_key
      })
      "smtp" = jsonencode({ SMTP_USERNAME = var.smtp_username, SMTP_PASSWORD = var.smtp_password })
    },
    {
      for s in local.data_services :
      "db-${s}" => "postgresql+asyncpg://resellio_${s}:${var.service_db_passwords[s]}@${local.db_host}:5432/resellio"
    },
  )
}

locals {
  # The names alone, so for_each never depends on a sensitive value.
  secret_names = concat(["db-owner", "amqp", "auth", "smtp"], [for s in local.data_services : "db-${s}"])
}

resource "aws_secretsmanager_secret" "main" {
  for_each                = toset(local.secret_names)
  name                    = "${local.name}/${each.key}"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 7
  #checkov:skip=CKV2_AWS_57:Values come from Terraform variables; rotating one is a new variable value and a redeploy (deploy/README.md), not a Lambda
}

resource "aws_secretsmanager_secret_version" "main" {
  for_each      = aws_secretsmanager_secret.main
  secret_id     = each.value.id
  secret_string = local.secret_values[each.key]
}
