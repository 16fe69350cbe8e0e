<?php

declare(strict_types=1);

namespace App\Models;

use Illuminate\Database\Eloquent\Model;
use Illuminate\Database\Eloquent\Relations\HasMany;
use Illuminate\Support\Carbon;

/** A teaching unit (UE); its totals are the sums of its active elements. */
class CourseUnit extends Model
{
    protected $table = 'course_units';
    protected $guarded = [];
    protected $casts = [
        'credits' => 'decimal:2',
        'hours_cm' => 'decimal:2',
        'hours_td' => 'decimal:2',
        'hours_tp' => 'decimal:2',
        'hours_total' => 'decimal:2',
        'elements_count' => 'integer',
        'hours_distribution' => 'array',
        'sync_credits_with_elements' => 'boolean',
        'sync_hours_with_elements' => 'boolean',
        'auto_sync_enabled' => 'boolean',
        'last_element_sync' => 'datetime',
        'last_job_sync' => 'datetime',
    ];

    public function elements(): HasMany
    {
        return $this->hasMany(CourseUnitElement::class);
    }

    /** The elements that count: active and not soft-deleted (SoftDeletes' scope). */
    public function activeElements(): HasMany
    {
        return $this->elements()->where('status', 'active');
    }

    /**
     * The old system's sync, in PHP: recompute the totals from the active elements and write
     * them (the observer after each element event, the job with $byJob).
     */
    public function syncFromElements(bool $byJob = false): void
    {
        $sums = $this->activeElements()
            ->selectRaw('coalesce(sum(credits), 0) as credits, coalesce(sum(hours_cm), 0) as cm, '
                . 'coalesce(sum(hours_td), 0) as td, coalesce(sum(hours_tp), 0) as tp, '
                . 'coalesce(sum(hours_total), 0) as total, count(*) as n')
            ->toBase()
            ->first();
        if ($this->sync_credits_with_elements) {
            $this->credits = $sums->credits;
        }
        if ($this->sync_hours_with_elements) {
            $this->hours_cm = $sums->cm;
            $this->hours_td = $sums->td;
            $this->hours_tp = $sums->tp;
            $this->hours_total = $sums->total;
        }
        $this->elements_count = (int) $sums->n;
        $total = (float) $this->hours_total;
        $this->hours_distribution = $total > 0
            ? [
                'cm' => round((float) $this->hours_cm * 100 / $total, 1),
                'td' => round((float) $this->hours_td * 100 / $total, 1),
                'tp' => round((float) $this->hours_tp * 100 / $total, 1),
            ]
            : ['cm' => 0, 'td' => 0, 'tp' => 0];
        $this->last_element_sync = Carbon::now();
        if ($byJob) {
            $this->last_job_sync = Carbon::now();
        }
        $this->save();
    }
}
