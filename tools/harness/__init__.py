"""Real-component test harness: ZooKeeper, PostgreSQL + repmgr, HAProxy, PgBouncer on 127.0.0.1."""
