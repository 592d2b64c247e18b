"""The monthly lease-payment acceptance report (月度租赁服务考核验收报告)."""
