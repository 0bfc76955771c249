output "load_balancer_dns_name" {
  description = "Point var.domain_name (CNAME or alias) here."
  value       = aws_lb.main.dns_name
}

output "api_url" {
  description = "The public API."
  value       = "https://${var.domain_name}"
}

output "ecs_cluster" {
  description = "ECS cluster running every process."
  value       = aws_ecs_cluster.main.name
}

output "migrate_task_definition" {
  description = "Run once per release before the services roll: migrations, then the per-service roles."
  value       = aws_ecs_task_definition.migrate.arn
}

output "migrate_network_configuration" {
  description = "The --network-configuration for `aws ecs run-task` of the migrate task."
  value = jsonencode({
    awsvpcConfiguration = {
      subnets        = var.private_subnet_ids
      securityGroups = [aws_security_group.tasks.id]
      assignPublicIp = "DISABLED"
    }
  })
}

output "database_endpoint" {
  description = "Aurora writer endpoint."
  value       = aws_rds_cluster.main.endpoint
}

output "broker_endpoints" {
  description = "Amazon MQ AMQPS endpoints."
  value       = aws_mq_broker.main.instances[*].endpoints
}

output "secret_arns" {
  description = "Secrets Manager ARNs by name (values are never output)."
  value       = { for k, s in aws_secretsmanager_secret.main : k => s.arn }
}
