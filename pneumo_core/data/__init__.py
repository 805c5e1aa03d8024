"""Images, preprocessing, the prediction tasks and dataset tables."""
