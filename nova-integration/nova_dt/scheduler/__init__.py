"""nova-scheduler plugins of nova-dt, enabled by import path in ``[filter_scheduler]``."""
