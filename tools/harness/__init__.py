"""Real-component test harness: ZooKeeper, PostgreSQL + repmgr, HAProxy, PgBouncer on 127.0.0.1,
or each on a simulated host of its own (`netns`, `system`)."""
