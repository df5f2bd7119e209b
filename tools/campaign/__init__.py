"""A Jepsen-style fault campaign over the whole system on simulated hosts: a seeded schedule
of faults, clients writing through the proxies, a recorder, and a checker of the history."""
