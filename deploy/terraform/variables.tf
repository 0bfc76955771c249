# Resellio on AWS. Every secret is a variable without a default: `terraform apply` asks for it
# (or reads TF_VAR_...), and it lands only in Secrets Manager (and the encrypted state).

variable "region" {
  description = "AWS region."
  type        = string
}

variable "environment" {
  description = "Name of this deployment, used in resource names (e.g. production)."
  type        = string
  default     = "production"
}

variable "vpc_id" {
  description = "Existing VPC to deploy into."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets (two or more AZs) for the Application Load Balancer."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Private subnets (two or more AZs, with NAT egress) for tasks, Aurora and Amazon MQ."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate for the public HTTPS listener."
  type        = string
}

variable "domain_name" {
  description = "Public host name of the API (points at the load balancer), e.g. tickets.example.com."
  type        = string
}

variable "alb_access_logs_bucket" {
  description = "Existing S3 bucket that receives the load balancer's access logs."
  type        = string
}

variable "image" {
  description = "The Resellio image (deploy/Dockerfile), pinned by digest: REGISTRY/resellio@sha256:..."
  type        = string
}

variable "services" {
  description = "Fargate size and instance count of each process."
  type = map(object({
    cpu           = number
    memory        = number
    desired_count = number
  }))
  default = {
    auth     = { cpu = 512, memory = 1024, desired_count = 2 }
    catalog  = { cpu = 512, memory = 1024, desired_count = 2 }
    ordering = { cpu = 1024, memory = 2048, desired_count = 2 }
    resale   = { cpu = 512, memory = 1024, desired_count = 2 }
    gateway  = { cpu = 1024, memory = 2048, desired_count = 2 }
  }
  validation {
    condition     = alltrue([for s in ["auth", "catalog", "ordering", "resale", "gateway"] : contains(keys(var.services), s)])
    error_message = "services must size auth, catalog, ordering, resale and gateway."
  }
}

variable "aurora_engine_version" {
  description = "Aurora PostgreSQL engine version."
  type        = string
  default     = "16.4"
}

variable "aurora_instance_class" {
  description = "Aurora instance class (two instances: writer and reader in different AZs)."
  type        = string
  default     = "db.r6g.large"
}

variable "mq_engine_version" {
  description = "Amazon MQ for RabbitMQ engine version."
  type        = string
  default     = "3.13"
}

variable "mq_instance_type" {
  description = "Amazon MQ broker instance type (a three-node cluster)."
  type        = string
  default     = "mq.m5.large"
}

variable "log_retention_days" {
  description = "How long CloudWatch keeps the services' logs."
  type        = number
  default     = 365
}

variable "smtp_host" {
  description = "SMTP relay for outgoing mail (e.g. Amazon SES's SMTP endpoint)."
  type        = string
}

variable "smtp_port" {
  description = "SMTP port (STARTTLS)."
  type        = number
  default     = 587
}

variable "smtp_from" {
  description = "Sender of every e-mail, e.g. Resellio <no-reply@example.com>."
  type        = string
}

variable "cors_allowed_origins" {
  description = "Browser origins allowed to call the API, comma-separated (empty: none)."
  type        = string
  default     = ""
}

# ---- Secrets: no defaults, never in tfvars files that are committed. ----

variable "db_master_username" {
  description = "Aurora master user: owns the schemas and runs the migrations."
  type        = string
  sensitive   = true
}

variable "db_master_password" {
  description = "Aurora master password."
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.db_master_password) >= 16 && can(regex("^[A-Za-z0-9_-]+$", var.db_master_password))
    error_message = "At least 16 URL-safe characters (A-Z a-z 0-9 _ -): it goes into a connection URL."
  }
}

variable "service_db_passwords" {
  description = "Password of each service's own database role (auth, catalog, ordering, resale)."
  type        = map(string)
  sensitive   = true
  validation {
    condition = alltrue([
      for s in ["auth", "catalog", "ordering", "resale"] :
      length(lookup(var.service_db_passwords, s, "")) >= 16 && can(regex("^[A-Za-z0-9_-]+$", lookup(var.service_db_passwords, s, "")))
    ])
    error_message = "One password per service (auth, catalog, ordering, resale), each at least 16 URL-safe characters."
  }
}

variable "mq_username" {
  description = "Amazon MQ user the services connect as."
  type        = string
  sensitive   = true
}

variable "mq_password" {
  description = "Amazon MQ password (12 to 250 characters, URL-safe)."
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.mq_password) >= 16 && can(regex("^[A-Za-z0-9_-]+$", var.mq_password))
    error_message = "At least 16 URL-safe characters (A-Z a-z 0-9 _ -): it goes into a connection URL."
  }
}

variable "initial_admin_email" {
  description = "E-mail of the first administrator (created by auth at its first start)."
  type        = string
  sensitive   = true
}

variable "initial_admin_password" {
  description = "Password of the first administrator."
  type        = string
  sensitive   = true
}

variable "admin_secret_key" {
  description = "Key that authorises creating further administrators."
  type        = string
  sensitive   = true
}

variable "jwt_private_key" {
  description = "Ed25519 private key (PKCS#8 PEM) that signs access tokens: openssl genpkey -algorithm ed25519."
  type        = string
  sensitive   = true
}

variable "smtp_username" {
  description = "SMTP user."
  type        = string
  sensitive   = true
}

variable "smtp_password" {
  description = "SMTP password."
  type        = string
  sensitive   = true
}
