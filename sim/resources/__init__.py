"""Who holds GPUs: function roles, leases, the serverless platform and the billing of both deployments."""
