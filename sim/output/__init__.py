"""What a run writes: run files (CSV, JSON), the HTML report and its plots."""
