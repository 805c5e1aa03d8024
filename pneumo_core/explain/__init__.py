"""Class activation maps and the out-of-distribution gate."""
