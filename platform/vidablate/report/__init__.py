"""Reports: render a finished ablation sweep as "reproduced vs paper" tables and plots."""
