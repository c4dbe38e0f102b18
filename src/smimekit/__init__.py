"""smimekit: sovereign S/MIME."""
