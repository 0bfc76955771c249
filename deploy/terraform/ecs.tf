# ECS Fargate: one service per process, found by each other through Service Connect
# (http://auth:8080 ...), the gateway behind the load balancer, and a one-off migrate task.

resource "aws_ecs_cluster" "main" {
  name = local.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_service_discovery_http_namespace" "main" {
  name = "${local.name}.internal"
}

resource "aws_cloudwatch_log_group" "process" {
  for_each          = toset(concat(local.all_processes, ["migrate"]))
  name              = "/ecs/${local.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

# Pulls the image, reads this deployment's secrets, writes logs; nothing else.
resource "aws_iam_role" "execution" {
  name = "${local.name}-execution"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "ecs-tasks.amazonaws.com" } }]
  })
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role_policy" "execution_secrets" {
  name = "read-resellio-secrets"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = "secretsmanager:GetSecretValue", Resource = [for s in aws_secretsmanager_secret.main : s.arn] },
      { Effect = "Allow", Action = "kms:Decrypt", Resource = aws_kms_key.main.arn },
    ]
  })
}

# The processes call no AWS API: their task role has no permissions.
resource "aws_iam_role" "task" {
  name = "${local.name}-task"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "ecs-tasks.amazonaws.com" } }]
  })
}

locals {
  secret_arn = { for k, s in aws_secretsmanager_secret.main : k => s.arn }

  common_environment = concat(
    [
      { name = "ENVIRONMENT", value = "production" },
      { name = "APP_BASE_URL", value = "https://${var.domain_name}" },
      { name = "PASSWORD_RESET_URL", value = "https://${var.domain_name}/reset-password" },
      { name = "CORS_ALLOWED_ORIGINS", value = var.cors_allowed_origins },
      { name = "SMTP_HOST", value = var.smtp_host },
      { name = "SMTP_PORT", value = tostring(var.smtp_port) },
      { name = "SMTP_USE_TLS", value = "true" },
      { name = "SMTP_FROM", value = var.smtp_from },
    ],
    [for s in local.all_processes : { name = "RESELLIO_${upper(s)}_URL", value = "http://${s}:${local.container_port}" }],
  )

  process_secrets = {
    for p in local.all_processes : p => concat(
      [{ name = "RESELLIO_AMQP_URL", valueFrom = local.secret_arn["amqp"] }],
      contains(local.data_services, p) ? [{ name = "RESELLIO_${upper(p)}_DATABASE_URL", valueFrom = local.secret_arn["db-${p}"] }] : [],
      contains(local.mail_services, p) ? [
        for k in ["SMTP_USERNAME", "SMTP_PASSWORD"] : { name = k, valueFrom = "${local.secret_arn["smtp"]}:${k}::" }
      ] : [],
      p == "auth" ? [
        for k in ["INITIAL_ADMIN_EMAIL", "INITIAL_ADMIN_PASSWORD", "ADMIN_SECRET_KEY", "JWT_PRIVATE_KEY"] :
        { name = k, valueFrom = "${local.secret_arn["auth"]}:${k}::" }
      ] : [],
    )
  }

  hardened = {
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    privileged             = false
    linuxParameters        = { capabilities = { drop = ["ALL"] }, initProcessEnabled = true }
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
  }
}

resource "aws_ecs_task_definition" "process" {
  for_each                 = toset(local.all_processes)
  family                   = "${local.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.services[each.key].cpu
  memory                   = var.services[each.key].memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  volume {
    name = "tmp"
  }
  container_definitions = jsonencode([merge(local.hardened, {
    name         = each.key
    image        = var.image
    essential    = true
    command      = ["serve", each.key, "--host", "0.0.0.0", "--port", tostring(local.container_port)]
    portMappings = [{ name = "http", containerPort = local.container_port, protocol = "tcp", appProtocol = "http" }]
    # The gateway sees every client through the load balancer's nodes, in its public subnets:
    # their X-Forwarded-For is the client's address (rate limits, logs); no one else's (another
    # task in the VPC) is believed.
    environment = each.key == "gateway" ? concat(local.common_environment, [
      { name = "TRUSTED_PROXIES", value = join(",", [for s in data.aws_subnet.public : s.cidr_block]) },
    ]) : local.common_environment
    secrets      = local.process_secrets[each.key]
    healthCheck = {
      command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.process[each.key].name
        awslogs-region        = var.region
        awslogs-stream-prefix = each.key
      }
    }
  })])
}

resource "aws_ecs_service" "process" {
  for_each               = toset(local.all_processes)
  name                   = each.key
  cluster                = aws_ecs_cluster.main.id
  task_definition        = aws_ecs_task_definition.process[each.key].arn
  desired_count          = var.services[each.key].desired_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  propagate_tags         = "SERVICE"
  enable_execute_command = false
  # Rolling deploys keep every instance of the old version until the new one is healthy.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }
  service_connect_configuration {
    enabled   = true
    namespace = aws_service_discovery_http_namespace.main.arn
    service {
      port_name = "http"
      client_alias {
        dns_name = each.key
        port     = local.container_port
      }
    }
  }
  # The gateway waits up to DENYLIST_STARTUP_WAIT_S for auth at start-up: not replaced for it.
  health_check_grace_period_seconds = each.key == "gateway" ? 60 : null
  dynamic "load_balancer" {
    for_each = each.key == "gateway" ? [1] : []
    content {
      target_group_arn = aws_lb_target_group.gateway.arn
      container_name   = "gateway"
      container_port   = local.container_port
    }
  }
  depends_on = [aws_lb_listener.https]
}

# Migrations as the owner, then each service's role: run once per release, before the
# services roll (deploy/README.md has the `aws ecs run-task` line).
resource "aws_ecs_task_definition" "migrate" {
  family                   = "${local.name}-migrate"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 512
  memory                   = 1024
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  volume {
    name = "tmp"
  }
  container_definitions = jsonencode([
    merge(local.hardened, {
      name        = "migrate"
      image       = var.image
      essential   = false
      command     = ["migrate"]
      environment = [{ name = "ENVIRONMENT", value = "production" }]
      secrets = [
        { name = "RESELLIO_DATABASE_URL", valueFrom = local.secret_arn["db-owner"] },
        { name = "RESELLIO_AMQP_URL", valueFrom = local.secret_arn["amqp"] },
      ]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.process["migrate"].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "migrate"
        }
      }
    }),
    merge(local.hardened, {
      name        = "db-roles"
      image       = var.image
      essential   = true
      command     = ["db", "roles"]
      dependsOn   = [{ containerName = "migrate", condition = "SUCCESS" }]
      environment = [{ name = "ENVIRONMENT", value = "production" }]
      secrets = concat(
        [{ name = "RESELLIO_DATABASE_URL", valueFrom = local.secret_arn["db-owner"] }],
        [for s in local.data_services : { name = "RESELLIO_${upper(s)}_DATABASE_URL", valueFrom = local.secret_arn["db-${s}"] }],
      )
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.process["migrate"].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "db-roles"
        }
      }
    }),
  ])
}
