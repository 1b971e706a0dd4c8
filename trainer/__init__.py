"""Multi-task training of BertPalsForMultitask: data, task schedules, metrics, gradient surgery and the Trainer."""
