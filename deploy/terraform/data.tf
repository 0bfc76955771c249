# Aurora PostgreSQL (one database, a schema per service) and Amazon MQ for RabbitMQ.

resource "aws_db_subnet_group" "main" {
  name       = local.name
  subnet_ids = var.private_subnet_ids
}

resource "aws_rds_cluster" "main" {
  cluster_identifier                  = local.name
  engine                              = "aurora-postgresql"
  engine_version                      = var.aurora_engine_version
  database_name                       = "resellio"
  master_username                     = var.db_master_username
  master_password                     = var.db_master_password
  db_subnet_group_name                = aws_db_subnet_group.main.name
  vpc_security_group_ids              = [aws_security_group.db.id]
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.main.arn
  backup_retention_period             = 14
  preferred_backup_window             = "03:00-04:00"
  copy_tags_to_snapshot               = true
  deletion_protection                 = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${local.name}-final"
  iam_database_authentication_enabled = true
  enabled_cloudwatch_logs_exports     = ["postgresql"]
  #checkov:skip=CKV2_AWS_8:Aurora's continuous backups (14 days) and snapshots; an AWS Backup plan is an organisation-wide choice
  #checkov:skip=CKV2_AWS_27:log_statement=all would write every statement, secrets included, to the logs
}

resource "aws_rds_cluster_instance" "main" {
  count                                 = 2 # a writer and a reader in another AZ (failover)
  identifier                            = "${local.name}-${count.index}"
  cluster_identifier                    = aws_rds_cluster.main.id
  engine                                = aws_rds_cluster.main.engine
  engine_version                        = aws_rds_cluster.main.engine_version
  instance_class                        = var.aurora_instance_class
  db_subnet_group_name                  = aws_db_subnet_group.main.name
  publicly_accessible                   = false
  auto_minor_version_upgrade            = true
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.main.arn
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  copy_tags_to_snapshot                 = true
}

resource "aws_iam_role" "rds_monitoring" {
  name = "${local.name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole", Principal = { Service = "monitoring.rds.amazonaws.com" } }]
  })
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_mq_broker" "main" {
  broker_name                = local.name
  engine_type                = "RabbitMQ"
  engine_version             = var.mq_engine_version
  host_instance_type         = var.mq_instance_type
  deployment_mode            = "CLUSTER_MULTI_AZ" # three nodes: quorum queues replicate across AZs
  publicly_accessible        = false
  subnet_ids                 = var.private_subnet_ids
  security_groups            = [aws_security_group.mq.id]
  auto_minor_version_upgrade = true
  # Encrypted at rest with an AWS-owned key: Amazon MQ for RabbitMQ accepts no other.
  #checkov:skip=CKV_AWS_209:Amazon MQ for RabbitMQ supports only AWS-owned KMS keys (encryption_options does not apply)
  logs {
    general = true
  }
  user {
    username = var.mq_username
    password = var.mq_password
  }
}
