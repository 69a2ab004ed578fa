"""审批数据库适配器 The approval system's database adapter (system ``county-222403-approval``): see README.md."""
