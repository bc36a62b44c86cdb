"""Report: figures (data -> matplotlib Figure) and the self-contained HTML report."""

from .figures import (
    plot_comparison,
    plot_direction,
    plot_group_losses,
    plot_heatmap,
    plot_image_grid,
    plot_layer_shares,
    plot_loss,
    plot_sharpness,
    plot_update_projection,
)
from .grids import save_group_grids
from .html import write_report
from .tensorboard import write_tensorboard

__all__ = ["write_report", "save_group_grids", "write_tensorboard", "plot_loss", "plot_sharpness", "plot_group_losses",
           "plot_heatmap", "plot_image_grid", "plot_direction", "plot_update_projection", "plot_comparison",
           "plot_layer_shares"]
