<?php

declare(strict_types=1);

namespace App\Models;

use Illuminate\Database\Eloquent\Model;
use Illuminate\Database\Eloquent\Relations\BelongsTo;
use Illuminate\Database\Eloquent\SoftDeletes;

/** An element (ECUE) of a teaching unit. */
class CourseUnitElement extends Model
{
    use SoftDeletes;

    protected $table = 'course_unit_elements';
    protected $guarded = [];
    protected $casts = [
        'credits' => 'decimal:2',
        'hours_cm' => 'decimal:2',
        'hours_td' => 'decimal:2',
        'hours_tp' => 'decimal:2',
        'hours_total' => 'decimal:2',
    ];

    public function courseUnit(): BelongsTo
    {
        return $this->belongsTo(CourseUnit::class);
    }
}
